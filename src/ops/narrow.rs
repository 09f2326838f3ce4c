//! Products of a constant matrix by 16 columns: the planar GEMM of a 4x4
//! pixel layer over one image, where the explorer's generators start, and
//! the Winograd GEMMs of one larger image (`winograd::single`), by an
//! AVX-512 kernel that reads the matrix from panels packed once.
//!
//! Why not the gemm crate here: it packs the matrix on every call, and
//! with 16 columns each packed value serves only 16 multiply-adds. Its
//! 512 x 2304 by 2304 x 16 product (the 32 px pixel-shuffle generator's
//! first layer) took 0.33 ms on one Zen 5 core with everything in cache,
//! this kernel 0.18 ms; 1024 x 4608 (64 px, 19 MB, beyond the L2)
//! 1.24-1.56 vs 0.68-0.83 ms (BENCHMARKS.md).

use super::transpose::{Store, transpose};

/// The columns of every product here: a 4x4-pixel image.
pub(super) const COLS: usize = 16;

/// Rows per panel: one 16-float accumulator per row and column block.
pub(super) const ROWS: usize = 16;

/// A matrix packed for [`Panels::product`]: panel q holds rows 16q..16q + 16,
/// their 16 values of each column k side by side, zeros past the last row.
pub struct Panels {
    data: Box<[f32]>,
    rows: usize,
    k: usize,
}

impl Panels {
    /// `a` (`rows` x `k`, row-major) in panels; None where this CPU lacks
    /// AVX-512 (the gemm crate then serves, as for other shapes).
    pub(super) fn new(a: &[f32], rows: usize, k: usize) -> Option<Self> {
        if !super::avx512f() {
            return None;
        }
        assert_eq!(a.len(), rows * k, "narrow: {} values for a {rows} x {k} matrix", a.len());
        let mut data = vec![0f32; rows.div_ceil(ROWS) * ROWS * k].into_boxed_slice();
        // Each panel is its block of rows transposed (k x 16); the last
        // panel's missing rows stay zero.
        for (panel, block) in data.chunks_exact_mut(ROWS * k).zip(a.chunks(ROWS * k)) {
            transpose(block, k, panel, ROWS, (block.len() / k, k), Store::Set);
        }
        Some(Self { data, rows, k })
    }

    /// Whether [`Self::product`] serves a GEMM with `cols` columns from row `first` on.
    pub(super) fn serves(&self, first: usize, cols: usize) -> bool {
        cols == COLS && first.is_multiple_of(ROWS)
    }

    /// Rows `first`.. of the matrix times `b` (k x 16, row-major) into `y`
    /// (as many rows of 16 as it holds), added to what `y` holds when `add`.
    /// `first` must start a panel ([`Self::serves`]).
    pub(super) fn product(&self, first: usize, b: &[f32], y: &mut [f32], add: bool) {
        let count = y.len() / COLS;
        assert!(
            first.is_multiple_of(ROWS)
                && first + count <= self.rows
                && y.len() == count * COLS
                && b.len() == self.k * COLS,
            "narrow: rows {first}..{} of {}, {} values of b for k = {}",
            first + count,
            self.rows,
            b.len(),
            self.k
        );
        let panels = self.data[first * self.k..].chunks_exact(ROWS * self.k);
        for (panel, y) in panels.zip(y.chunks_mut(ROWS * COLS)) {
            let mut out = [0f32; ROWS * COLS];
            let live = &mut out[..y.len()];
            if add {
                live.copy_from_slice(y);
            }
            // SAFETY: `avx512f` held when the panels were made; the
            // panel holds k x 16 values and `b` k x 16 (asserted above).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                avx512::panel(panel, b, self.k, &mut out);
            }
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("narrow: panels exist only where the kernel runs ({panel:p}, {b:p})");
            y.copy_from_slice(&out[..y.len()]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, _MM_HINT_T0, _mm_prefetch, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_storeu_ps,
    };

    use super::{COLS, ROWS};

    /// How far ahead of the kernel the panels are fetched, in values (128
    /// cache lines). The 64 px generators' first layers (8-19 MB) come
    /// from L3 or memory, faster than the hardware prefetcher brings them:
    /// 1024 x 4608 by 16 columns took 0.68-0.83 ms with it, 0.75-1.3
    /// without (one Zen 5 core; 16 or 64 lines ahead did less, smaller
    /// matrices were level), and one image of the 64 px generators 1.40-1.59
    /// instead of 1.88-1.89 ms (transposed conv), 2.54-2.80 instead of
    /// 3.37-3.53 (pixel shuffle).
    const AHEAD: usize = 2048;

    /// `out` (16 rows x 16 columns) += the panel (k x 16 rows) times `b`
    /// (k x 16): per column k, `b`'s row in one register and each of the
    /// panel's 16 values broadcast into a multiply-add with it, 16
    /// accumulators in registers throughout.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX-512F; `panel` and `b` must hold k x 16 values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn panel(panel: &[f32], b: &[f32], k: usize, out: &mut [f32; ROWS * COLS]) {
        assert!(panel.len() >= k * ROWS && b.len() >= k * COLS, "narrow: operands shorter than k = {k}");
        // SAFETY: the assert keeps every read inside `panel` and `b`, and
        // `out` holds the 16 rows of 16 written.
        unsafe {
            let mut acc: [__m512; ROWS] = std::array::from_fn(|r| _mm512_loadu_ps(out.as_ptr().add(r * COLS)));
            let (mut p, mut x) = (panel.as_ptr(), b.as_ptr());
            for _ in 0..k {
                // A hint, never dereferenced: past the panels is harmless.
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(AHEAD).cast());
                let row = _mm512_loadu_ps(x);
                for (r, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(_mm512_set1_ps(*p.add(r)), row, *acc);
                }
                p = p.add(ROWS);
                x = x.add(COLS);
            }
            for (r, acc) in acc.iter().enumerate() {
                _mm512_storeu_ps(out.as_mut_ptr().add(r * COLS), *acc);
            }
        }
    }
}
