//! Products of many rows by constant matrices packed once: the batch
//! Winograd GEMMs, each position's (tiles x C) times its transformed
//! kernel (C x O), by an AVX-512 kernel that reads the rows where they lie.
//!
//! Why not the gemm crate here: it packs both operands on every call, so
//! each thread repacked the whole transformed kernel for each group of
//! images. Here the kernel is packed once, at its first use, and serves
//! every group, both threads and (kept by `winograd::recent`) every later
//! call with the same weights. The rows (the tiles' transforms, 16 or 36
//! positions' C values side by side) are read in place, each value
//! broadcast, so they need no packing either. Timed inside training steps
//! of the pixel-shuffle nets, the two ways alternating (BENCHMARKS.md,
//! 2026-12-03): each product shape took 11-14% less time at 32 px and
//! 10-21% less at 64 px on one thread, 6-28% and 11-43% less on two; with
//! the packing paid (2 ms a step at 32 px, 7-11 at 64), whole steps ran
//! 1.8% faster on one thread at both sizes, 1.3-4% at 32 px and 14% at
//! 64 px on two.

use std::ops::Range;

use rayon::prelude::*;

use super::transpose::{Store, transpose};

/// Columns per panel: two 16-float vectors.
const NR: usize = 32;

/// Rows per kernel call: 12 x 2 accumulators, two panel vectors and a
/// broadcast fill 27 of the 32 vector registers.
const MR: usize = 12;

/// Inner-dimension block: 12 rows of it (12 KiB) stay in L1 while the
/// panels stream past them from L2.
const KC: usize = 256;

/// Rows a multiple of this many values (4 KiB) apart share their L1
/// cache sets: 12 of them, read side by side, evict each other and the
/// panels (a stride-2 layer's rows lie 36 C apart). Such rows are copied,
/// [`LDB`] apart, a block at a time; others are read where they lie.
pub(super) const ALIASED: usize = 1024;

/// Where copied rows lie apart: a cache line more than [`KC`].
const LDB: usize = KC + 16;

/// Matrices (K x N each) in panels of [`NR`] columns: the panel of
/// columns j.. holds, for each matrix in turn, its K rows of those columns
/// (16 in the last panel when N is an odd multiple of 16), so that
/// consecutive matrices read as one, their inner dimensions end to end.
pub(super) struct Packed {
    data: Box<[f32]>,
    /// Matrices, and the rows (K) and columns (N) of each.
    count: usize,
    k: usize,
    n: usize,
}

impl Packed {
    /// `count` matrices of K x N, the e-th stored by columns in
    /// `columns(e)` (column n at `n * K`); None where [`serves`] does not
    /// hold. The panels are shared out between the threads.
    pub(super) fn new<'a>(
        count: usize,
        (k, n): (usize, usize),
        columns: impl Fn(usize) -> &'a [f32] + Sync,
    ) -> Option<Self> {
        if !serves(n) {
            return None;
        }
        let mut data = Box::new_uninit_slice(count * k * n);
        let mut panels = Vec::new();
        let mut rest = &mut data[..];
        for j in (0..n).step_by(NR) {
            let (panel, tail) = rest.split_at_mut(count * k * NR.min(n - j));
            panels.push((j, panel));
            rest = tail;
        }
        panels.into_par_iter().for_each(|(j, panel)| {
            let width = NR.min(n - j);
            for (e, block) in panel.chunks_exact_mut(k * width).enumerate() {
                transpose(&columns(e)[j * k..], k, block, width, (width, k), Store::Set);
            }
        });
        // SAFETY: the panels split `data` whole, and each transpose set
        // every value of its block (k x width).
        let data = unsafe { data.assume_init() };
        Some(Self { data, count, k, n })
    }

    /// `y` (rows x N, row-major) = the rows of `a` (row r at `a[r *
    /// lda..]`) times matrices `mats` read as one (their K rows each, end
    /// to end), added to what `y` holds when `add`.
    pub(super) fn product(&self, mats: Range<usize>, a: &[f32], lda: usize, y: &mut [f32], add: bool) {
        let (n, k) = (self.n, self.k * mats.len());
        let rows = y.len() / n;
        assert!(
            mats.end <= self.count && y.len() == rows * n && (rows == 0 || (rows - 1) * lda + k <= a.len()),
            "packed: {rows} rows of {} values ({lda} apart) times matrices {mats:?} of {}",
            a.len(),
            self.count
        );
        // Rows that would share their cache sets go through this copy (made,
        // and zeroed, only for them).
        let mut copy = if lda.is_multiple_of(ALIASED) { Some([0f32; MR * LDB]) } else { None };
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            let add = add || k0 > 0;
            for r0 in (0..rows).step_by(MR) {
                let mr = MR.min(rows - r0);
                let (a, lda) = match &mut copy {
                    Some(copy) => {
                        for (r, row) in copy.chunks_exact_mut(LDB).take(mr).enumerate() {
                            row[..kc].copy_from_slice(&a[(r0 + r) * lda + k0..][..kc]);
                        }
                        (&copy[..], LDB)
                    }
                    None => (&a[r0 * lda + k0..], lda),
                };
                for j in (0..n).step_by(NR) {
                    let width = NR.min(n - j);
                    // Columns j.. start after j / 32 whole panels of all matrices.
                    let at = j * self.count * self.k + (mats.start * self.k + k0) * width;
                    let tile = Tile { a, lda, b: &self.data[at..][..kc * width], kc };
                    let y = &mut y[r0 * n + j..];
                    // SAFETY: `serves` held when the panels were made, so
                    // the CPU has AVX-512; `tile` checks the operands' bounds.
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        avx512::tile(&tile, (mr, width / 16), y, n, add);
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    unreachable!("packed: no kernel here ({:p}, {y:p})", tile.b);
                }
            }
        }
    }

    /// The bytes the panels take.
    pub(super) fn bytes(&self) -> usize {
        self.data.len() * size_of::<f32>()
    }
}

/// Whether [`Packed`] serves products of N columns: a multiple of 16, on
/// a CPU with AVX-512.
fn serves(n: usize) -> bool {
    super::avx512f() && n > 0 && n.is_multiple_of(16)
}

/// One kernel call's operands: `kc` values of each row of `a` (`lda`
/// apart) times a panel's `kc` rows, `b`.
struct Tile<'a> {
    a: &'a [f32],
    lda: usize,
    b: &'a [f32],
    kc: usize,
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
    };

    use super::{MR, Tile};

    /// `y`'s first `rows` rows (`ldy` apart) of 16 x `vectors` values (+)=
    /// the tile's product, by the kernel for that shape.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX-512F; `t.a` must hold `rows` rows of `t.kc`
    /// values, `t.lda` apart, and `t.b` kc x 16 x `vectors` values; `y`
    /// the rows written.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile(t: &Tile, (rows, vectors): (usize, usize), y: &mut [f32], ldy: usize, add: bool) {
        assert!(
            rows <= MR
                && (vectors == 1 || vectors == 2)
                && t.b.len() >= t.kc * 16 * vectors
                && (rows == 0 || (rows - 1) * t.lda + t.kc <= t.a.len())
                && (rows == 0 || (rows - 1) * ldy + 16 * vectors <= y.len()),
            "packed: a {rows} x {} tile out of bounds",
            16 * vectors
        );
        macro_rules! dispatch {
            ($($r:literal)*) => {
                match (rows, vectors) {
                    $(($r, 1) => unsafe { kernel::<$r, 1>(t, y, ldy, add) },
                      ($r, 2) => unsafe { kernel::<$r, 2>(t, y, ldy, add) },)*
                    _ => unreachable!("packed: no kernel for {rows} x {vectors}"),
                }
            };
        }
        dispatch!(1 2 3 4 5 6 7 8 9 10 11 12);
    }

    /// R rows by V vectors: per inner index, the panel's V vectors loaded
    /// once and each row's value broadcast into V multiply-adds, R x V
    /// accumulators in registers throughout.
    ///
    /// # Safety
    ///
    /// As [`tile`], with R rows and V vectors.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn kernel<const R: usize, const V: usize>(t: &Tile, y: &mut [f32], ldy: usize, add: bool) {
        // SAFETY: `tile` checked every row and column read and written.
        unsafe {
            let yp = y.as_mut_ptr();
            let mut acc: [[__m512; V]; R] = [[_mm512_setzero_ps(); V]; R];
            if add {
                for (r, acc) in acc.iter_mut().enumerate() {
                    for (v, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm512_loadu_ps(yp.add(r * ldy + 16 * v));
                    }
                }
            }
            let (a, mut b) = (t.a.as_ptr(), t.b.as_ptr());
            for k in 0..t.kc {
                let cols: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(b.add(16 * v)));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*a.add(r * t.lda + k));
                    for (acc, col) in acc.iter_mut().zip(cols) {
                        *acc = _mm512_fmadd_ps(x, col, *acc);
                    }
                }
                b = b.add(16 * V);
            }
            for (r, acc) in acc.iter().enumerate() {
                for (v, acc) in acc.iter().enumerate() {
                    _mm512_storeu_ps(yp.add(r * ldy + 16 * v), *acc);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value for each index, spread over [-1, 1) by a hash.
    fn value(i: usize) -> f32 {
        (i.wrapping_mul(2_654_435_761) % 2001) as f32 / 1000.0 - 1.0
    }

    #[test]
    fn products_match_sums() {
        // 29 rows (two whole 12-row blocks and 5), N = 48 (a 32-column
        // panel and a 16-column one), K = 300 per matrix, so that matrices
        // 1 and 2 read as one cross a 256-value block.
        let (count, k, n, rows) = (4, 300, 48, 29);
        // Stored by columns: (e, r, col) at e K N + col K + r.
        let stored: Vec<f32> = (0..count * k * n).map(|i| value(7 + i)).collect();
        let Some(packed) = Packed::new(count, (k, n), |e| &stored[e * k * n..][..k * n]) else {
            return; // no AVX-512 here: the gemm crate serves, as tested elsewhere
        };
        let b = |i: usize, col: usize| stored[(1 + i / k) * k * n + col * k + i % k];
        // Rows read where they lie, and rows 4 KiB apart, copied first.
        for (lda, add) in [(2 * k + 5, false), (2 * k + 5, true), (ALIASED, false), (ALIASED, true)] {
            let a: Vec<f32> = (0..rows * lda + k).map(value).collect();
            let start: Vec<f32> = (0..rows * n).map(|i| value(i + 3)).collect();
            let mut y = start.clone();
            packed.product(1..3, &a[k..], lda, &mut y, add);
            for r in 0..rows {
                for col in 0..n {
                    let sum: f32 = (0..2 * k).map(|i| a[k + r * lda + i] * b(i, col)).sum();
                    let want = sum + if add { start[r * n + col] } else { 0.0 };
                    let got = y[r * n + col];
                    assert!((got - want).abs() <= 1e-3 * (1.0 + want.abs()), "row {r}, column {col}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn narrow_columns_are_not_served() {
        assert!(Packed::new(1, (4, 12), |_| &[0.0; 48]).is_none());
    }
}
