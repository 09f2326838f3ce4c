//! Matrix transposes between the planar (channel-major) layout of the
//! network's tensors and the channels-last one of the convolutions'
//! operands, a few percent of every training step.
//!
//! Why hand-written: no crate transposes strided f32 blocks with an
//! accumulate option. On x86-64, 4x4 blocks go through SSE registers (SSE
//! is part of the x86-64 baseline, so no feature check is needed). Timed
//! one thread here against the scalar loop it replaced, the deep layers'
//! shapes (256 x 4 to 64 x 256) took 0.15-0.26 ns per value instead of
//! 0.37-0.44; the largest (1024 x 64, 4096 x 128), bound by memory, are
//! level (0.41, 0.70). Blocks run 16 source rows at a time so that each
//! destination row gets 64 contiguous bytes per pass.
//!
//! Where the CPU has AVX, 8x8 blocks go through its 256-bit registers
//! first, 32 source rows a pass, and the 4x4 blocks only take the edges:
//! on an AVX-512 Xeon, best of 5 on one thread, 64 x 32 to 256 x 256 took
//! 0.13-0.19 ns per value instead of 0.20-0.29, 1024 x 64 and 4096 x 16
//! 0.29-0.35 instead of 0.38-0.50; rows of 4 values stay on SSE.

use std::mem::MaybeUninit;

/// What a transpose does with the destination value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Store {
    /// Overwrites it.
    Set,
    /// Adds to it.
    Add,
}

/// What a transpose stores into: f32 values, or uninitialized ones, which
/// it can only set (a fresh output it writes in full, spared a zeroing).
pub(super) trait Slot: Sized {
    /// Whether the slot holds a value that can be added to.
    const INIT: bool;

    fn set(&mut self, v: f32);

    fn add(&mut self, v: f32);
}

impl Slot for f32 {
    const INIT: bool = true;

    #[inline(always)]
    fn set(&mut self, v: f32) {
        *self = v;
    }

    #[inline(always)]
    fn add(&mut self, v: f32) {
        *self += v;
    }
}

impl Slot for MaybeUninit<f32> {
    const INIT: bool = false;

    #[inline(always)]
    fn set(&mut self, v: f32) {
        self.write(v);
    }

    fn add(&mut self, _: f32) {
        unreachable!("transpose: adding into an uninitialized value");
    }
}

/// Source rows per pass.
const TILE: usize = 16;

/// `dst[j * ldd + i] (=|+=) src[i * lds + j]` for `i < rows`, `j < cols`;
/// only [`Store::Set`] into uninitialized slots.
pub(super) fn transpose<T: Slot>(
    src: &[f32],
    lds: usize,
    dst: &mut [T],
    ldd: usize,
    (rows, cols): (usize, usize),
    into: Store,
) {
    assert!(T::INIT || into == Store::Set, "transpose: only Set stores into uninitialized values");
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        src.len() >= (rows - 1) * lds + cols && dst.len() >= (cols - 1) * ldd + rows,
        "transpose: {rows} x {cols} does not fit its operands"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: this CPU has AVX; the assert above keeps the shape inside
        // both operands.
        unsafe { avx::by_eights(src, lds, dst, ldd, (rows, cols), into) };
        return;
    }
    by_fours(src, lds, dst, ldd, (rows, cols), into);
}

/// [`transpose`] in 4x4 blocks and scalar edges, for a shape that the
/// caller checked fits both operands.
fn by_fours<T: Slot>(src: &[f32], lds: usize, dst: &mut [T], ldd: usize, (rows, cols): (usize, usize), into: Store) {
    for i0 in (0..rows).step_by(TILE) {
        let i1 = (i0 + TILE).min(rows);
        // The 4x4 blocks of this strip, then its ragged right and bottom edges.
        let (i4, j4) = (i0 + (i1 - i0) / 4 * 4, cols / 4 * 4);
        for j0 in (0..j4).step_by(4) {
            for i in (i0..i4).step_by(4) {
                block(src, lds, dst, ldd, (i, j0), into);
            }
        }
        scalar(src, lds, dst, ldd, (i0..i1, j4..cols), into);
        scalar(src, lds, dst, ldd, (i4..i1, 0..j4), into);
    }
}

/// The scalar transpose of rows `is` and columns `js` of `src`.
fn scalar<T: Slot>(
    src: &[f32],
    lds: usize,
    dst: &mut [T],
    ldd: usize,
    (is, js): (std::ops::Range<usize>, std::ops::Range<usize>),
    into: Store,
) {
    // Value by value, the inner loop along the longer side: the edges are
    // a few long rows (3 colour planes into pixels) or a few long columns
    // (the right edge of 16-row strips), and a strided iterator per column,
    // as this once was, cost 1.5-4 ns per value on the first.
    let mut each = |f: fn(&mut T, f32)| {
        let mut at = |i: usize, j: usize| f(&mut dst[j * ldd + i], src[i * lds + j]);
        if js.len() >= is.len() {
            is.clone().for_each(|i| js.clone().for_each(|j| at(i, j)));
        } else {
            js.clone().for_each(|j| is.clone().for_each(|i| at(i, j)));
        }
    };
    match into {
        Store::Set => each(T::set),
        Store::Add => each(T::add),
    }
}

/// The 4x4 block at row `i`, column `j` of `src`, which [`transpose`]
/// checked lies inside both operands.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn block<T: Slot>(src: &[f32], lds: usize, dst: &mut [T], ldd: usize, (i, j): (usize, usize), into: Store) {
    use std::arch::x86_64::{
        _mm_add_ps, _mm_loadu_ps, _mm_movehl_ps, _mm_movelh_ps, _mm_storeu_ps, _mm_unpackhi_ps, _mm_unpacklo_ps,
    };
    let (s, d) = (&src[i * lds + j..], &mut dst[j * ldd + i..]);
    assert!(s.len() > 3 * lds + 3 && d.len() > 3 * ldd + 3, "transpose: a block outside its operands");
    // SAFETY: SSE is in the x86-64 baseline; the assert above keeps the four
    // 4-value rows read from `s` and written to `d` inside them. A slot has
    // the layout of an f32, and `transpose` allows `Add`, which reads `d`,
    // only for initialized slots.
    unsafe {
        let (s, d) = (s.as_ptr(), d.as_mut_ptr().cast::<f32>());
        let r: [_; 4] = std::array::from_fn(|k| _mm_loadu_ps(s.add(k * lds)));
        let (lo01, lo23) = (_mm_unpacklo_ps(r[0], r[1]), _mm_unpacklo_ps(r[2], r[3]));
        let (hi01, hi23) = (_mm_unpackhi_ps(r[0], r[1]), _mm_unpackhi_ps(r[2], r[3]));
        let columns = [
            _mm_movelh_ps(lo01, lo23),
            _mm_movehl_ps(lo23, lo01),
            _mm_movelh_ps(hi01, hi23),
            _mm_movehl_ps(hi23, hi01),
        ];
        for (k, column) in columns.into_iter().enumerate() {
            let at = d.add(k * ldd);
            match into {
                Store::Set => _mm_storeu_ps(at, column),
                Store::Add => _mm_storeu_ps(at, _mm_add_ps(_mm_loadu_ps(at), column)),
            }
        }
    }
}

/// 8x8 blocks in AVX registers.
#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_loadu_ps, _mm256_permute2f128_ps, _mm256_shuffle_ps, _mm256_storeu_ps,
        _mm256_unpackhi_ps, _mm256_unpacklo_ps,
    };

    use super::{Slot, Store, by_fours};

    /// Source rows per pass: each destination row gets 128 contiguous
    /// bytes (32 rows beat 16 on the large shapes, level on the rest).
    const STRIP: usize = 32;

    /// [`super::transpose`] in 8x8 blocks, the ragged right and bottom
    /// edges by [`by_fours`].
    ///
    /// # Safety
    ///
    /// The CPU must have AVX; the shape must fit both operands.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn by_eights<T: Slot>(
        src: &[f32],
        lds: usize,
        dst: &mut [T],
        ldd: usize,
        (rows, cols): (usize, usize),
        into: Store,
    ) {
        let (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
        for i0 in (0..r8).step_by(STRIP) {
            for j in (0..c8).step_by(8) {
                for i in (i0..(i0 + STRIP).min(r8)).step_by(8) {
                    // SAFETY: AVX, as the caller promised.
                    unsafe { block(src, lds, dst, ldd, (i, j), into) };
                }
            }
        }
        if c8 < cols {
            by_fours(&src[c8..], lds, &mut dst[c8 * ldd..], ldd, (rows, cols - c8), into);
        }
        if r8 < rows && c8 > 0 {
            by_fours(&src[r8 * lds..], lds, &mut dst[r8..], ldd, (rows - r8, c8), into);
        }
    }

    /// The 8x8 block at row `i`, column `j` of `src`: pairs of rows
    /// interleaved, then pairs of pairs, then the 128-bit halves swapped
    /// into place.
    #[target_feature(enable = "avx")]
    unsafe fn block<T: Slot>(src: &[f32], lds: usize, dst: &mut [T], ldd: usize, (i, j): (usize, usize), into: Store) {
        let (s, d) = (&src[i * lds + j..], &mut dst[j * ldd + i..]);
        assert!(s.len() > 7 * lds + 7 && d.len() > 7 * ldd + 7, "transpose: a block outside its operands");
        // SAFETY: the assert above keeps the eight 8-value rows read from
        // `s` and written to `d` inside them. A slot has the layout of an
        // f32, and `transpose` allows `Add`, which reads `d`, only for
        // initialized slots.
        unsafe {
            let (s, d) = (s.as_ptr(), d.as_mut_ptr().cast::<f32>());
            let r: [__m256; 8] = std::array::from_fn(|k| _mm256_loadu_ps(s.add(k * lds)));
            let t: [__m256; 8] = std::array::from_fn(|k| {
                let (a, b) = (r[k / 2 * 2], r[k / 2 * 2 + 1]);
                if k % 2 == 0 { _mm256_unpacklo_ps(a, b) } else { _mm256_unpackhi_ps(a, b) }
            });
            // u[k]: from t[0..4] for k < 4, t[4..8] after; the low or high
            // pair of each 128-bit lane.
            let u: [__m256; 8] = std::array::from_fn(|k| {
                let (a, b) = (t[k / 4 * 4 + k % 4 / 2], t[k / 4 * 4 + k % 4 / 2 + 2]);
                if k % 2 == 0 { _mm256_shuffle_ps::<0x44>(a, b) } else { _mm256_shuffle_ps::<0xEE>(a, b) }
            });
            for k in 0..8 {
                let (a, b) = (u[k % 4], u[k % 4 + 4]);
                let column =
                    if k < 4 { _mm256_permute2f128_ps::<0x20>(a, b) } else { _mm256_permute2f128_ps::<0x31>(a, b) };
                let at = d.add(k * ldd);
                match into {
                    Store::Set => _mm256_storeu_ps(at, column),
                    Store::Add => _mm256_storeu_ps(at, _mm256_add_ps(_mm256_loadu_ps(at), column)),
                }
            }
        }
    }
}

/// The 4x4 block at row `i`, column `j` of `src`, elsewhere than x86-64.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn block<T: Slot>(src: &[f32], lds: usize, dst: &mut [T], ldd: usize, (i, j): (usize, usize), into: Store) {
    scalar(src, lds, dst, ldd, (i..i + 4, j..j + 4), into);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape's blocks and edges land where the plain definition puts
    /// them, with and without accumulating, on padded strides: through
    /// this CPU's widest blocks and through the 4x4 ones alone.
    #[test]
    fn matches_the_definition() {
        type Transpose = fn(&[f32], usize, &mut [f32], usize, (usize, usize), Store);
        let ways: [(&str, Transpose); 2] = [("widest", transpose), ("4x4", by_fours)];
        let shapes = [(1, 1), (3, 5), (4, 4), (8, 8), (16, 8), (17, 7), (35, 13), (64, 3), (41, 19), (70, 33)];
        for ((rows, cols), (way, transpose)) in shapes.into_iter().flat_map(|s| ways.map(|w| (s, w))) {
            let (lds, ldd) = (cols + 2, rows + 3);
            let src: Vec<f32> = (0..rows * lds).map(|v| v as f32).collect();
            for into in [Store::Set, Store::Add] {
                let mut dst: Vec<f32> = (0..cols * ldd).map(|v| -(v as f32)).collect();
                let before = dst.clone();
                transpose(&src, lds, &mut dst, ldd, (rows, cols), into);
                for (e, (&got, &old)) in dst.iter().zip(&before).enumerate() {
                    let (j, i) = (e / ldd, e % ldd);
                    let want = match (i < rows, into) {
                        (false, _) => old,
                        (true, Store::Set) => src[i * lds + j],
                        (true, Store::Add) => old + src[i * lds + j],
                    };
                    assert_eq!(got, want, "{way}: {rows} x {cols} {into:?} at ({j}, {i})");
                }
            }
        }
    }

    /// Setting uninitialized slots writes every value a set into f32s does;
    /// adding into them is refused.
    #[test]
    fn sets_uninitialized_slots() {
        for (rows, cols) in [(1, 1), (3, 5), (17, 7), (64, 3)] {
            let src: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
            let mut want = vec![f32::NAN; rows * cols];
            transpose(&src, cols, &mut want, rows, (rows, cols), Store::Set);
            let mut slots = vec![MaybeUninit::<f32>::uninit(); rows * cols];
            transpose(&src, cols, &mut slots, rows, (rows, cols), Store::Set);
            // SAFETY: the transpose set all rows x cols slots (ldd = rows).
            let got: Vec<f32> = slots.iter().map(|s| unsafe { s.assume_init() }).collect();
            assert_eq!(got, want, "{rows} x {cols}");
        }
        let refused = std::panic::catch_unwind(|| {
            let mut slots = [MaybeUninit::<f32>::uninit(); 4];
            transpose(&[1.0; 4], 2, &mut slots, 2, (2, 2), Store::Add);
        });
        assert!(refused.is_err(), "adding into uninitialized slots");
    }
}
