//! A kernel's taps to its transform's positions, and a transform's
//! gradient back to taps: the products by the small constant maps (G ⊗ G,
//! 16 positions x 9 taps; the phases' 36 x 16) over every (c, o) pair of a
//! layer at once.
//!
//! Why not a GEMM: these maps move a few values per pair through memory
//! (9 or 16 taps in, 16 or 36 positions out), and most of each map is
//! zero (64 of G ⊗ G's 144 values are not, 64 of the phases' 576). The
//! gemm crate took each as a dense GEMM of 9 to 36 columns and, on one
//! thread, 4.3 ms to transform the 32 px generator's largest kernel
//! (131072 pairs); here 2.2 ms, and all of a 32 px pixel-shuffle step's
//! maps 7.8 instead of 11.2 ms (steps alternating, BENCHMARKS.md,
//! 2026-12-03; on two threads level, both bound by memory). Each block of
//! pairs is transposed once into a small buffer, and each nonzero
//! coefficient is one multiply-add over the block.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::super::par_written;
use super::super::transpose::{Store, transpose};

/// Pairs per block: a block's taps (at most 16 x 64 values, 4 KiB) stay
/// in L1.
const BLOCK: usize = 64;

/// The fewest pairs a rayon job maps: below, handing work to the pool
/// costs more than it saves.
const MIN_JOB: usize = 16 * BLOCK;

/// The most taps a kernel has (4x4), and positions a transform (36).
const MAX_TAPS: usize = 16;
const MAX_POSITIONS: usize = 36;

/// The nonzero (index, value) of each row of `m`, `cols` values a row, or
/// of each column when `by_columns`.
fn nonzeros(m: &[f32], cols: usize, by_columns: bool) -> Vec<Vec<(usize, f32)>> {
    let rows = m.len() / cols.max(1);
    let (outer, inner) = if by_columns { (cols, rows) } else { (rows, cols) };
    let at = |i: usize, j: usize| if by_columns { m[j * cols + i] } else { m[i * cols + j] };
    (0..outer).map(|i| (0..inner).map(|j| (j, at(i, j))).filter(|&(_, v)| v != 0.0).collect()).collect()
}

/// `dst = Σ coef · row(index)` over `terms`, value by value.
#[inline(always)]
fn combine<'a>(terms: &[(usize, f32)], row: impl Fn(usize) -> &'a [f32], dst: &mut [f32]) {
    dst.fill(0.0);
    for &(j, coef) in terms {
        dst.iter_mut().zip(row(j)).for_each(|(d, &s)| *d += coef * s);
    }
}

/// Rayon jobs of whole blocks for `pairs` pairs: at least [`MIN_JOB`]
/// pairs each, about four per thread.
fn job_size(pairs: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    pairs.div_ceil(4 * threads).next_multiple_of(BLOCK).max(MIN_JOB)
}

/// Sets every value of `u` (positions x pairs) to `coefs` (positions x
/// taps) times the kernel `wt` read as taps x pairs (it is stored pairs x
/// taps, each pair's taps side by side).
pub(super) fn to_positions(coefs: &[f32], taps: usize, wt: &[f32], u: &mut [MaybeUninit<f32>]) {
    let pairs = wt.len() / taps.max(1);
    let positions = coefs.len() / taps.max(1);
    assert!(
        (1..=MAX_TAPS).contains(&taps)
            && wt.len() == pairs * taps
            && coefs.len() == positions * taps
            && u.len() == positions * pairs,
        "winograd taps: {} weights, {} coefficients and {} positions for {taps} taps",
        wt.len(),
        coefs.len(),
        u.len()
    );
    if pairs == 0 {
        return;
    }
    let rows = nonzeros(coefs, taps, false);
    let job = job_size(pairs);
    // Each job's piece of every position's row: jobs write disjoint columns.
    let mut parts: Vec<Vec<&mut [MaybeUninit<f32>]>> = (0..pairs.div_ceil(job)).map(|_| Vec::new()).collect();
    for row in u.chunks_exact_mut(pairs) {
        parts.iter_mut().zip(row.chunks_mut(job)).for_each(|(part, piece)| part.push(piece));
    }
    parts.into_par_iter().enumerate().for_each(|(i, mut part)| {
        let wt = &wt[i * job * taps..];
        let (mut xt, mut y) = ([0f32; MAX_TAPS * BLOCK], [0f32; BLOCK]);
        let width = part.first().map_or(0, |p| p.len());
        for j in (0..width).step_by(BLOCK) {
            let w = BLOCK.min(width - j);
            // The block's taps, each a row of BLOCK pairs.
            transpose(&wt[j * taps..], taps, &mut xt[..], BLOCK, (w, taps), Store::Set);
            for (terms, row) in rows.iter().zip(part.iter_mut()) {
                combine(terms, |t| &xt[t * BLOCK..][..w], &mut y[..w]);
                row[j..j + w].write_copy_of_slice(&y[..w]);
            }
        }
    });
}

/// `dw` (pairs x taps, each pair's taps side by side) = `du` read as pairs
/// x positions (it is stored positions x pairs) times `coefs` (positions x
/// taps).
pub(super) fn to_taps(coefs: &[f32], taps: usize, du: &[f32]) -> Vec<f32> {
    let positions = coefs.len() / taps.max(1);
    let pairs = du.len() / positions.max(1);
    assert!(
        (1..=MAX_TAPS).contains(&taps)
            && (1..=MAX_POSITIONS).contains(&positions)
            && du.len() == positions * pairs
            && coefs.len() == positions * taps,
        "winograd taps: {} gradient values and {} coefficients for {taps} taps",
        du.len(),
        coefs.len()
    );
    let columns = nonzeros(coefs, taps, true);
    let job = job_size(pairs);
    // Block by block: each block's positions copied side by side first
    // (rows `pairs` apart, often a multiple of 4 KiB, would share their L1
    // sets), mapped to taps, then transposed into place.
    // SAFETY: each block's transpose sets all of its w x taps values, and
    // the blocks cover every chunk.
    unsafe {
        par_written(pairs * taps, (job * taps, 1), |i, out| {
            let (mut g, mut t) = ([0f32; MAX_POSITIONS * BLOCK], [0f32; MAX_TAPS * BLOCK]);
            for (j, out) in (i * job..).step_by(BLOCK).zip(out.chunks_mut(BLOCK * taps)) {
                let w = out.len() / taps;
                for (p, g) in g.chunks_exact_mut(BLOCK).take(positions).enumerate() {
                    g[..w].copy_from_slice(&du[p * pairs + j..][..w]);
                }
                for (terms, t) in columns.iter().zip(t.chunks_exact_mut(BLOCK)) {
                    combine(terms, |p| &g[p * BLOCK..][..w], &mut t[..w]);
                }
                transpose(&t, BLOCK, out, taps, (taps, w), Store::Set);
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

    /// A positions x taps map with zeros among its values, as the real ones have.
    fn map(positions: usize, taps: usize) -> Vec<f32> {
        (0..positions * taps).map(|i| if i % 3 == 1 { 0.0 } else { value(i + 11) }).collect()
    }

    fn close(got: f32, want: f32) -> bool {
        (got - want).abs() <= 1e-5 * (1.0 + want.abs())
    }

    #[test]
    fn positions_are_the_map_times_the_taps() {
        // A partial block (pairs not a multiple of 64) and, at 2100 pairs,
        // more than one job's worth.
        for (positions, taps, pairs) in [(16, 9, 37), (36, 16, 2100), (16, 9, 1100)] {
            let coefs = map(positions, taps);
            let wt: Vec<f32> = (0..pairs * taps).map(value).collect();
            let mut u = vec![MaybeUninit::new(f32::NAN); positions * pairs];
            to_positions(&coefs, taps, &wt, &mut u);
            // SAFETY: a `MaybeUninit<f32>` made from a value is that value.
            let u: Vec<f32> = u.iter().map(|v| unsafe { v.assume_init() }).collect();
            for p in 0..positions {
                for e in 0..pairs {
                    let want: f32 = (0..taps).map(|t| coefs[p * taps + t] * wt[e * taps + t]).sum();
                    assert!(close(u[p * pairs + e], want), "position {p}, pair {e}: {} vs {want}", u[p * pairs + e]);
                }
            }
        }
    }

    #[test]
    fn taps_are_the_gradient_times_the_map() {
        for (positions, taps, pairs) in [(16, 9, 37), (36, 16, 2100), (16, 9, 1100)] {
            let coefs = map(positions, taps);
            let du: Vec<f32> = (0..positions * pairs).map(|i| value(i + 5)).collect();
            let dw = to_taps(&coefs, taps, &du);
            assert_eq!(dw.len(), pairs * taps);
            for e in 0..pairs {
                for t in 0..taps {
                    let want: f32 = (0..positions).map(|p| du[p * pairs + e] * coefs[p * taps + t]).sum();
                    assert!(close(dw[e * taps + t], want), "pair {e}, tap {t}: {} vs {want}", dw[e * taps + t]);
                }
            }
        }
    }
}
