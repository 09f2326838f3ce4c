//! A kernel's taps to its transform's positions, and a transform's
//! gradient back to taps: small constant maps (`G g Gᵀ` of F(2x2, 3x3),
//! 9 taps to 16 positions; the stride-2 phases' 16 to 36) applied to every
//! (c, o) pair of a layer at once, and their transposes.
//!
//! Why not a GEMM: these maps move a few values per pair through memory,
//! and most of each map as a matrix is zero. The gemm crate took G ⊗ G as
//! a dense GEMM of 9 columns: 4.3 ms on one thread for the 32 px
//! generator's largest kernel (131072 pairs).
//!
//! Why separable maps on vectors: applied as sparse sums (each nonzero
//! coefficient a multiply-add pass over a block of 64 pairs in memory),
//! the same kernel still took 2.0-3.4 ms each way, where a copy of its
//! 2.1 M positions takes 0.24 (a one-thread probe, BENCHMARKS.md,
//! 2026-12-04 evening). Now eight pairs at a time sit in vector registers
//! and [`sandwich`] applies G, written out as code, along one axis, then
//! the other: 1.5-1.8 ms to positions, 1.3-1.7 back to taps.

use std::array;
use std::mem::MaybeUninit;

use rayon::prelude::*;
use wide::f32x8;

use super::super::par_written;
use super::super::transpose::{Store, transpose};
use super::{Lanes, apply_across};

/// Pairs per block: a block's taps and positions (at most 36 x 64 values,
/// 9 KiB) stay in L1.
const BLOCK: usize = 64;

/// The fewest pairs a rayon job maps: below, handing work to the pool
/// costs more than it saves.
const MIN_JOB: usize = 16 * BLOCK;

/// The most taps a kernel has (4x4), and positions a transform (36) or a
/// kernel gradient (100: F(4x4, 2x2)'s 4 phases of 25).
const MAX_TAPS: usize = 16;
const MAX_POSITIONS: usize = 100;

/// `m g mᵀ` of a K x K grid `g`, where `m` multiplies a column of K
/// values by an R x K matrix: the 2-D transforms of Winograd's algorithm
/// (`G g Gᵀ`, and `Gᵀ d G` for a gradient), K + R products by the matrix
/// instead of one by its Kronecker square.
///
/// Why `m` as code, not a matrix of constants whose zeros and ones would
/// fold away: the loops over such a matrix were not unrolled, so its
/// coefficients were tested at run time (the maps ran no faster than the
/// sparse sums they replaced); and loops, not `array::from_fn`, whose
/// calls were not always inlined in this build (incremental, many codegen
/// units).
#[inline(always)]
pub(super) fn sandwich<const R: usize, const K: usize>(
    m: impl Fn([f32x8; K]) -> [f32x8; R],
    g: &[[f32x8; K]; K],
) -> [[f32x8; R]; R] {
    let mut cols = [[f32x8::ZERO; R]; K];
    for b in 0..K {
        let mut col = [f32x8::ZERO; K];
        for a in 0..K {
            col[a] = g[a][b];
        }
        cols[b] = m(col);
    }
    let mut y = [[f32x8::ZERO; R]; R];
    for i in 0..R {
        let mut row = [f32x8::ZERO; K];
        for b in 0..K {
            row[b] = cols[b][i];
        }
        y[i] = m(row);
    }
    y
}

/// [`sandwich`] of a K x K grid given row by row (K² values), its R x R
/// result row by row: the map of one kernel's taps to its positions, of a
/// gradient back to taps, of a tile's output gradients. Index loops, as
/// in [`sandwich`]: written with the array's `into_iter().enumerate()`,
/// the F(4x4, 3x3) kernel gradient at 8x8 took 14.1-14.2 ms a step
/// instead of 10.6-11.1 (one thread, `bench --ops`).
#[inline(always)]
pub(super) fn sandwich_rows<const K: usize, const R: usize, const KK: usize, const RR: usize>(
    m: impl Fn([f32x8; K]) -> [f32x8; R],
    x: [f32x8; KK],
) -> [f32x8; RR] {
    const { assert!(KK == K * K && RR == R * R, "K x K values in, R x R out") };
    let mut g = [[f32x8::ZERO; K]; K];
    for a in 0..K {
        for b in 0..K {
            g[a][b] = x[K * a + b];
        }
    }
    let y = sandwich(m, &g);
    let mut out = [f32x8::ZERO; RR];
    for i in 0..R {
        for j in 0..R {
            out[R * i + j] = y[i][j];
        }
    }
    out
}

/// Rayon jobs of whole blocks for `pairs` pairs: at least [`MIN_JOB`]
/// pairs each, about four per thread.
fn job_size(pairs: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    pairs.div_ceil(4 * threads).next_multiple_of(BLOCK).max(MIN_JOB)
}

/// Sets every value of `u` (P rows of the pairs' positions, each row
/// followed by zeros up to the next) to `map` of each pair's T taps in
/// `wt` (stored pairs x taps, each pair's taps side by side).
pub(super) fn to_positions<const T: usize, const P: usize>(
    map: &(impl Lanes<T, P> + Sync),
    wt: &[f32],
    u: &mut [MaybeUninit<f32>],
) {
    let (pairs, stride) = (wt.len() / T, u.len() / P);
    assert!(
        T <= MAX_TAPS && P <= MAX_POSITIONS && wt.len() == pairs * T && u.len() == P * stride && stride >= pairs,
        "winograd taps: {} weights and {} positions for {T} taps and {P} positions a pair",
        wt.len(),
        u.len()
    );
    if pairs == 0 {
        u.fill(MaybeUninit::new(0.0));
        return;
    }
    let job = job_size(pairs);
    // Each job's piece of every position's row: jobs write disjoint columns.
    let mut parts: Vec<Vec<&mut [MaybeUninit<f32>]>> = (0..pairs.div_ceil(job)).map(|_| Vec::new()).collect();
    for row in u.chunks_exact_mut(stride) {
        let (row, padding) = row.split_at_mut(pairs);
        padding.fill(MaybeUninit::new(0.0));
        parts.iter_mut().zip(row.chunks_mut(job)).for_each(|(part, piece)| part.push(piece));
    }
    parts.into_par_iter().enumerate().for_each(|(i, mut part)| {
        let wt = &wt[i * job * T..];
        let mut xt = [0f32; MAX_TAPS * BLOCK];
        let width = part.first().map_or(0, |p| p.len());
        for j in (0..width).step_by(BLOCK) {
            let w = BLOCK.min(width - j);
            // The block's taps, each a row of BLOCK pairs.
            transpose(&wt[j * T..], T, &mut xt[..], BLOCK, (w, T), Store::Set);
            let mut taps = xt.chunks_exact(BLOCK);
            let mut rows = part.iter_mut();
            let src = array::from_fn(|_| &taps.next().expect("T taps")[..w]);
            apply_across(src, array::from_fn(|_| &mut rows.next().expect("P positions")[j..j + w]), None, map);
        }
    });
}

/// `dw` (pairs x T, each pair's taps side by side) = `map` of each pair's
/// P positions in `du` (stored positions x pairs).
pub(super) fn to_taps<const P: usize, const T: usize>(map: &(impl Lanes<P, T> + Sync), du: &[f32]) -> Vec<f32> {
    let pairs = du.len() / P;
    assert!(
        T <= MAX_TAPS && P <= MAX_POSITIONS && du.len() == P * pairs,
        "winograd taps: {} gradient values for {P} positions a pair",
        du.len()
    );
    let job = job_size(pairs);
    // Block by block: each block's positions copied side by side first
    // (rows `pairs` apart, often a multiple of 4 KiB, would share their L1
    // sets), mapped to taps, then transposed into place.
    // SAFETY: each block's transpose sets all of its w x T values, and
    // the blocks cover every chunk.
    unsafe {
        par_written(pairs * T, (job * T, 1), |i, out| {
            let (mut g, mut t) = ([0f32; MAX_POSITIONS * BLOCK], [0f32; MAX_TAPS * BLOCK]);
            for (j, out) in (i * job..).step_by(BLOCK).zip(out.chunks_mut(BLOCK * T)) {
                let w = out.len() / T;
                for (p, g) in g.chunks_exact_mut(BLOCK).take(P).enumerate() {
                    g[..w].copy_from_slice(&du[p * pairs + j..][..w]);
                }
                let mut positions = g.chunks_exact(BLOCK);
                let mut taps = t.chunks_exact_mut(BLOCK);
                let src = array::from_fn(|_| &positions.next().expect("P positions")[..w]);
                apply_across(src, array::from_fn(|_| &mut taps.next().expect("T taps")[..w]), None, map);
                transpose(&t, BLOCK, out, T, (T, w), Store::Set);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value for each index, spread over [-1, 1) by a hash.
    fn value(i: usize) -> f32 {
        (i.wrapping_mul(2_654_435_761) % 2001) as f32 / 1000.0 - 1.0
    }

    fn close(got: f32, want: f32) -> bool {
        (got - want).abs() <= 1e-5 * (1.0 + want.abs())
    }

    /// A 5 x 3 map with zeros, ones, minus ones and other values, as the
    /// real ones have.
    const M: [[f32; 3]; 5] = [[1.0, 0.0, 0.0], [0.5, -0.5, 0.5], [0.0, -1.0, 2.0], [0.0, 0.0, 0.0], [-1.0, 0.25, 1.0]];

    /// `M x`, and `Mᵀ x`.
    fn m(x: [f32x8; 3]) -> [f32x8; 5] {
        array::from_fn(|i| (0..3).map(|j| x[j] * M[i][j]).fold(f32x8::ZERO, |s, t| s + t))
    }

    fn m_t(x: [f32x8; 5]) -> [f32x8; 3] {
        array::from_fn(|j| (0..5).map(|i| x[i] * M[i][j]).fold(f32x8::ZERO, |s, t| s + t))
    }

    #[test]
    fn sandwich_is_the_map_along_both_axes() {
        let g: [[f32; 3]; 3] = array::from_fn(|a| array::from_fn(|b| value(3 * a + b)));
        let vectors = g.map(|row| row.map(|v| f32x8::new(array::from_fn(|l| v + l as f32))));
        let got = sandwich(m, &vectors);
        for (i, j) in (0..5).flat_map(|i| (0..5).map(move |j| (i, j))) {
            for lane in 0..8 {
                let want: f32 = (0..9).map(|t| M[i][t / 3] * M[j][t % 3] * (g[t / 3][t % 3] + lane as f32)).sum();
                let got = got[i][j].to_array()[lane];
                assert!(close(got, want), "({i}, {j}) lane {lane}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn positions_are_the_map_of_each_pairs_taps() {
        // A partial block (pairs not a multiple of 64), more than one job's
        // worth at 2100 pairs, and rows padded apart.
        for (pairs, stride) in [(37, 37), (2100, 2100), (1100, 1116)] {
            let wt: Vec<f32> = (0..pairs * 3).map(value).collect();
            let mut u = vec![MaybeUninit::new(f32::NAN); 5 * stride];
            to_positions(&m, &wt, &mut u);
            // SAFETY: a `MaybeUninit<f32>` made from a value is that value.
            let u: Vec<f32> = u.iter().map(|v| unsafe { v.assume_init() }).collect();
            for p in 0..5 {
                for e in 0..pairs {
                    let want: f32 = (0..3).map(|t| M[p][t] * wt[e * 3 + t]).sum();
                    assert!(close(u[p * stride + e], want), "position {p}, pair {e}: {} vs {want}", u[p * stride + e]);
                }
                assert!(u[p * stride + pairs..][..stride - pairs].iter().all(|&v| v == 0.0), "padding after row {p}");
            }
        }
    }

    #[test]
    fn taps_are_the_map_of_each_pairs_positions() {
        for pairs in [37, 2100, 1100] {
            let du: Vec<f32> = (0..5 * pairs).map(|i| value(i + 5)).collect();
            let dw = to_taps(&m_t, &du);
            assert_eq!(dw.len(), pairs * 3);
            for e in 0..pairs {
                for t in 0..3 {
                    let want: f32 = (0..5).map(|p| du[p * pairs + e] * M[p][t]).sum();
                    assert!(close(dw[e * 3 + t], want), "pair {e}, tap {t}: {} vs {want}", dw[e * 3 + t]);
                }
            }
        }
    }
}
