//! Products of a constant matrix by 16 columns: the planar GEMM of a 4x4
//! pixel layer over one image, where the explorer's generators start, and
//! the Winograd GEMMs of one larger image (`winograd::single`), by an
//! AVX-512 kernel that reads the matrix from panels packed once; and a 3x3
//! kernel's products over one 4x4 image tap by tap, from the same panels
//! ([`Panels::conv3x3_4x4`]).
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
        assert_eq!(b.len(), self.k * COLS, "narrow: {} values of b for k = {}", b.len(), self.k);
        // SAFETY: the panels exist, so `avx512f` held when they were made;
        // each holds k x 16 values and `b` k x 16 (asserted above).
        #[cfg(target_arch = "x86_64")]
        self.each_panel(first, y, add, |panel, out| unsafe { avx512::panel(panel, b, self.k, out) });
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("narrow: panels exist only where the kernel runs ({first}, {b:p}, {y:p}, {add})");
    }

    /// [`Self::product`] for a 3x3 convolution with padding 1 over one
    /// image of 4x4 pixels, the matrix its kernel (O x 9C): from the image
    /// `x` (C x 16) itself, tap by tap, where the product takes its
    /// patches.
    ///
    /// Why: a 4x4 image's patches are 44 of 144 zeros (each tap off the
    /// centre reaches only 9 or 12 of the pixels), which the product
    /// multiplies like the rest; here each tap's multiply-adds are only
    /// those of the pixels it reaches, 100 per channel and 16 rows.
    pub(super) fn conv3x3_4x4(&self, first: usize, x: &[f32], y: &mut [f32], add: bool) {
        let c = self.k / 9;
        assert!(
            self.k == 9 * c && x.len() == c * COLS,
            "narrow: a 3x3 kernel of k = {} over {} values of a 4x4 image",
            self.k,
            x.len()
        );
        // SAFETY: as in `product`; each panel holds 9C x 16 values and
        // `x` C x 16 (asserted above).
        #[cfg(target_arch = "x86_64")]
        self.each_panel(first, y, add, |panel, out| unsafe { avx512::taps(panel, x, c, out) });
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("narrow: panels exist only where the kernel runs ({first}, {x:p}, {y:p}, {add})");
    }

    /// Runs `kernel` on each panel from row `first` on with the 16 x 16
    /// outputs it adds to (`y`'s rows, or zeros unless `add`), into `y`.
    fn each_panel(&self, first: usize, y: &mut [f32], add: bool, kernel: impl Fn(&[f32], &mut [f32; ROWS * COLS])) {
        let count = y.len() / COLS;
        assert!(
            first.is_multiple_of(ROWS) && first + count <= self.rows && y.len() == count * COLS,
            "narrow: rows {first}..{} of {}",
            first + count,
            self.rows
        );
        let panels = self.data[first * self.k..].chunks_exact(ROWS * self.k);
        for (panel, y) in panels.zip(y.chunks_mut(ROWS * COLS)) {
            let mut out = [0f32; ROWS * COLS];
            let live = &mut out[..y.len()];
            if add {
                live.copy_from_slice(y);
            }
            kernel(panel, &mut out);
            y.copy_from_slice(&out[..y.len()]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, _MM_HINT_T0, _mm_prefetch, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps,
        _mm512_storeu_ps,
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

    /// `out` (16 rows x 16 pixels) += the panel (9C x 16 rows: per
    /// channel, its 9 taps) times the 3x3 patches of `x`, one 4x4 image of
    /// C channels with padding 1: per channel and tap, the panel's 16 rows
    /// in one register, multiplied into each reached pixel's accumulator
    /// (its 16 rows as lanes) by the pixel's input value broadcast; the
    /// accumulators are transposed into `out` at the end.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX-512F; `panel` must hold 9C x 16 values and
    /// `x` C x 16.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn taps(panel: &[f32], x: &[f32], c: usize, out: &mut [f32; ROWS * COLS]) {
        assert!(panel.len() >= 9 * c * ROWS && x.len() >= c * COLS, "narrow: operands shorter than C = {c}");
        // SAFETY: the assert keeps every read inside `panel` and `x`.
        unsafe {
            let mut acc = [_mm512_setzero_ps(); COLS];
            let (mut p, mut xs) = (panel.as_ptr(), x.as_ptr());
            for _ in 0..c {
                for line in 0..9 {
                    // A hint, never dereferenced: past the panels is harmless.
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(AHEAD + line * ROWS).cast());
                }
                tap::<0, 0>(&mut acc, p, xs);
                tap::<0, 1>(&mut acc, p, xs);
                tap::<0, 2>(&mut acc, p, xs);
                tap::<1, 0>(&mut acc, p, xs);
                tap::<1, 1>(&mut acc, p, xs);
                tap::<1, 2>(&mut acc, p, xs);
                tap::<2, 0>(&mut acc, p, xs);
                tap::<2, 1>(&mut acc, p, xs);
                tap::<2, 2>(&mut acc, p, xs);
                p = p.add(9 * ROWS);
                xs = xs.add(COLS);
            }
            let mut by_pixel = [[0f32; ROWS]; COLS];
            for (px, acc) in by_pixel.iter_mut().zip(acc) {
                _mm512_storeu_ps(px.as_mut_ptr(), acc);
            }
            for (r, row) in out.chunks_exact_mut(COLS).enumerate() {
                for (v, px) in row.iter_mut().zip(&by_pixel) {
                    *v += px[r];
                }
            }
        }
    }

    /// Tap (`KY`, `KX`) of one channel: its 16 rows at `w`, the channel's
    /// 16 pixels at `xs`; output pixel (y, x) reads input pixel (y + KY -
    /// 1, x + KX - 1) where that lies inside the image.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX-512F; `w` and `xs` must hold 16 values each.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tap<const KY: usize, const KX: usize>(acc: &mut [__m512; COLS], w: *const f32, xs: *const f32) {
        // SAFETY: the caller's.
        unsafe {
            let w = _mm512_loadu_ps(w.add((3 * KY + KX) * ROWS));
            for (px, acc) in acc.iter_mut().enumerate() {
                let (sy, sx) = ((px / 4 + KY).wrapping_sub(1), (px % 4 + KX).wrapping_sub(1));
                if sy < 4 && sx < 4 {
                    *acc = _mm512_fmadd_ps(w, _mm512_set1_ps(*xs.add(4 * sy + sx)), *acc);
                }
            }
        }
    }
}
