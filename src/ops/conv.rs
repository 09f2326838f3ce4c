//! Convolution and transposed convolution on the CPU as patch copies plus
//! one GEMM per group of images, written as candle custom ops with their
//! backward.
//!
//! Why not candle's own: on the CPU, candle's `conv_transpose2d` is a direct
//! loop (6-16 GFLOP/s here) and conv2d's input gradient goes through it, so
//! a DCGAN step spends most of its time there. Three primitives cover
//! forward and backward of both ops:
//!
//! - `conv(x, w)`: `y[n] = W (O x CKK) * im2col(x[n]) (CKK x HoWo)`
//! - `conv_t(x, w)`: `y[n] = col2im(W^T (OKK x C) * x[n] (C x HiWi))`
//! - `weight_grad(a, b)`: `sum_n b[n] (B x HoWo) * im2col(a[n])^T (HoWo x AKK)`
//!
//! conv's input gradient is a transposed convolution and vice versa; both
//! weight gradients are `weight_grad` with the roles of the tensors swapped.
//! Batches of wide enough 3x3 stride-1 and 4x4 stride-2 layers run all
//! three by Winograd's minimal filtering instead (`winograd`).
//!
//! The deep layers of a DCGAN are 4x4 or 8x8 pixels, so one image gives a
//! GEMM of 16 or 64 columns, which the gemm crate runs in its slow edge
//! kernels. Images therefore go in groups (see `group_size`) whose
//! matrices sit side by side: each primitive runs one GEMM per group, with
//! at least ~256 columns (~128 on more than one thread; or inner dimension,
//! for `weight_grad`). Groups of a batch run in parallel on rayon, each
//! thread reusing its own scratch buffers.
//!
//! Batches copy their patches channels-last (see `Geom`): one copy per
//! kernel row of hundreds of values, against runs of 4-8 pixels for planar
//! im2col in the deep layers, which made the copies a quarter of a training
//! step. Small batches, few output channels and the stride-2 RGB layers
//! keep the planar layout (see `channels_last`, `PLANAR_BELOW`); there, a
//! convolution over fewer images than threads
//! (the explorer's batch of one) splits each image's output channels
//! between the threads: always for a transposed convolution, from
//! `SPLIT_MIN_MACS` on for a convolution.

use std::array;
use std::cell::{Cell, RefCell};
use std::iter::repeat_n;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::activation::Act;
use super::batch_norm::BatchNormTrain;
use super::conv_bn;
use super::dense::Dense;
use super::narrow::{self, Panels};
use super::transpose::{Store, transpose};
use super::winograd::{self, Batch, Kernel, Single, Transformed};
use super::{CHUNK, bias, fast, fast_cuda, kept, min_chunks, par_chunked, slice, tracked, unfold};

/// The fewest GEMM columns per group worth aiming for: below this the gemm
/// crate's edge microkernels and per-call overhead dominate. Above it,
/// larger groups only stream more through the cache: 256 against 512,
/// training steps alternating in one process on a quiet 2-core Zen 5 EPYC
/// (BENCHMARKS.md, "Session of 2026-12-03, 06:36-09:36 UTC"), were 0-5%
/// faster at 32 px on one and two threads and up to 3.4% at 64 px (pixel
/// shuffle at 64 px on one thread 0.5-0.9% slower). Against 256, 128 was
/// 1-3% slower on one thread and 384 7-9% slower on two, most likely as
/// 24-image groups of 4x4 layers split a 64-image batch 24 + 24 + 16,
/// three groups for two threads. Keep it a power of two.
///
/// Threads sharing the caches aim for half ([`group_size`]): once the
/// Winograd products stopped repacking their kernels per group
/// (`ops/packed.rs`), 128 against 256 on two threads, steps alternating
/// (BENCHMARKS.md, 2026-12-03, 08:54-11:54 UTC), read 1.028 / 1.035 /
/// 0.992 at 32 px (pixel shuffle / transposed conv / nearest-conv, 48
/// steps each way; first quartiles 1.017-1.055) and 0.997 / 1.025 /
/// 0.998 at 64 px, while one thread stayed 1-2% faster with 256.
const MIN_GEMM_COLS: usize = 256;

/// The fewest images for which [`channels_last`] patches pay for their
/// kernel transpose: a 512x256x4x4 kernel takes about as long to transpose
/// as a few images' planar patches waste.
const CHANNELS_LAST_MIN_IMAGES: usize = 4;

/// The fewest output channels for which a convolution copies its patches
/// channels-last: its GEMM then makes O values per pixel, and a handful
/// (the RGB layer) leaves the gemm crate in its narrow edge kernels, while
/// such layers sit at full resolution where planar runs are long.
const CHANNELS_LAST_MIN_OUT: usize = 16;

/// Fewer channels than this on the image side of a 4x4 stride-2 layer (a
/// convolution's input, a transposed convolution's output: D's first
/// layer and the transposed-conv generators' RGB layer) keep planar
/// patches, copied by [`Phases`], in a batch too: channels-last, each
/// patch row of such a layer is 4 copies of 4 C values, and the products
/// came out channels-last to be transposed. At 32 px, batch 64, one
/// thread, the five ops of those two layers a step (`bench --ops`,
/// alternating with the channels-last build) took 15.3-16.3 ms before
/// and 11.7-12.7 ms after.
const PLANAR_BELOW: usize = 8;

/// Whether a layer of `g` with `c` channels on its image side keeps
/// planar patches whatever the batch (see [`PLANAR_BELOW`]).
fn planar_rgb(g: Geom, c: usize) -> bool {
    g.phases() && c < PLANAR_BELOW
}

/// The fewest multiply-adds per image for which a convolution over fewer
/// images than threads splits its output channels between them: a split
/// costs two hand-offs to the pool, ~50 us each. On an AVX-512 Xeon the
/// 3x3 layers of 32 px generators (19M multiply-adds, ~0.2 ms there) did
/// not always win that back; on an AVX2 EPYC, where they take ~1 ms, they
/// did: pixel-shuffle generators of one image on two threads, this
/// threshold at 2^25 / 2^23 / 2^21 in turn, medians of 90, 28 px 0.93 /
/// 0.79 / 0.81 ms, 32 px 2.08 / 1.81 / 1.80 ms, 64 px level (7.2-7.3 ms).
const SPLIT_MIN_MACS: usize = 1 << 23;

/// Images per group when one image gives `cols` GEMM columns: enough for
/// [`MIN_GEMM_COLS`] (half as many on more than one thread), but no more
/// than an even share of the `n` images per rayon thread, so that every
/// thread still gets a group.
pub(super) fn group_size(n: usize, cols: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let min = if threads > 1 { MIN_GEMM_COLS / 2 } else { MIN_GEMM_COLS };
    min.div_ceil(cols.max(1)).min(n.div_ceil(threads)).max(1)
}

thread_local! {
    /// This thread's scratch buffers, kept between calls.
    static SCRATCH: RefCell<[Vec<f32>; 3]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

/// Runs `f` with this thread's scratch buffers, `lens` values long.
///
/// Why: each group's columns and GEMM operands were fresh zeroed vectors,
/// and zeroing plus first-touch page faults cost ~5% of a training step.
/// Every user here overwrites its buffers in full before reading them
/// (the padding and patch copies write every value they are given, the
/// GEMMs do not read their output, gather/scatter cover their ranges), so
/// stale values never leak. `f` must not run rayon work itself: a job
/// stolen meanwhile on this thread would find the buffers borrowed.
pub(super) fn with_scratch<R>(lens: [usize; 3], f: impl FnOnce([&mut [f32]; 3]) -> R) -> R {
    SCRATCH.with_borrow_mut(|bufs| f(prefixes(bufs, lens)))
}

/// The first `lens[i]` values of each buffer, grown to that length where
/// it is shorter.
fn prefixes<const K: usize>(bufs: &mut [Vec<f32>; K], lens: [usize; K]) -> [&mut [f32]; K] {
    let mut bufs = bufs.iter_mut();
    lens.map(|len| {
        let buf = bufs.next().expect("one buffer per length");
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        &mut buf[..len]
    })
}

thread_local! {
    /// This thread's buffer for [`with_spare`] between uses.
    static SPARE: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with `len` values of this thread's spare buffer, kept between
/// calls; stale, so `f` writes before it reads. Unlike [`with_scratch`]'s,
/// it serves code that runs inside a `with_scratch` body (patch copies,
/// a group's output): a nested call gets a buffer of its own (fresh, then
/// kept in place of the outer one's).
///
/// Why not fresh vectors per call: small buffers per image or group of
/// images cost more than their allocation. Fresh per image, the stride-2
/// RGB layers' `Phases` made the pixel-shuffle nets' training steps 3-9%
/// slower on one thread (alternating runs), though no op of those nets
/// uses `Phases` and the ops' own `bench --ops` times stayed level: most
/// likely the allocator's state moved where later ops' large buffers
/// land. Taking a Winograd group's pixel and tile buffers from here too
/// (`Planes::fill`) then made 32 px pixel-shuffle steps 2-4% faster on
/// one thread and 1-6% on two, transposed conv 0-4% on one.
pub(super) fn with_spare<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = [SPARE.take()];
    let [spare] = prefixes(&mut buf, [len]);
    let r = f(spare);
    let [buf] = buf;
    SPARE.set(buf);
    r
}

/// Buffers that rayon jobs share, kept between calls (see [`with_shared`]).
static SHARED: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// Runs `f` with buffers `lens` values long that, unlike [`with_scratch`]'s,
/// `f` may hand out to rayon jobs.
///
/// Why: a batch-wide weight gradient's operands are megabytes, and fresh
/// ones come from the OS, which zeroes each page on first touch: a pass
/// over all of them per call. They stay allocated for the process's
/// life, as large as the largest layer's (tens of MB at 64 px). As for
/// [`with_scratch`], every user writes its buffers before reading them.
pub(super) fn with_shared<const K: usize, R>(lens: [usize; K], f: impl FnOnce([&mut [f32]; K]) -> R) -> R {
    let mut bufs: [Vec<f32>; K] = {
        let mut pool = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        array::from_fn(|_| pool.pop().unwrap_or_default())
    };
    let r = f(prefixes(&mut bufs, lens));
    SHARED.lock().unwrap_or_else(PoisonError::into_inner).extend(bufs);
    r
}

/// Copies `src` (`imgs` x `rows` x `len`, image-major) into `dst` (`rows` x
/// `imgs * len`): the group's images side by side as one GEMM operand.
fn gather(src: &[f32], imgs: usize, rows: usize, len: usize, dst: &mut [f32]) {
    for (t, img) in src.chunks_exact(rows * len).take(imgs).enumerate() {
        for (r, part) in img.chunks_exact(len).enumerate() {
            dst[r * imgs * len + t * len..][..len].copy_from_slice(part);
        }
    }
}

/// The inverse of [`gather`]: `src` (`rows` x `imgs * len`) back into `dst`
/// (`imgs` x `rows` x `len`).
fn scatter(src: &[f32], imgs: usize, rows: usize, len: usize, dst: &mut [f32]) {
    for (t, img) in dst.chunks_exact_mut(rows * len).take(imgs).enumerate() {
        for (r, part) in img.chunks_exact_mut(len).enumerate() {
            part.copy_from_slice(&src[r * imgs * len + t * len..][..len]);
        }
    }
}

/// (channels, height, width) of one image.
pub(super) type Dims = (usize, usize, usize);

/// `src` as blocks of `rows` x `cols`, each block transposed: a kernel's
/// channel axis moved behind its taps, or back.
fn transpose_blocks(src: &[f32], (rows, cols): (usize, usize)) -> Vec<f32> {
    let block = rows * cols;
    if block == 0 {
        return src.to_vec();
    }
    assert_eq!(src.len() % block, 0, "transpose_blocks: a partial block");
    let mut dst = Vec::with_capacity(src.len());
    let blocks = dst.spare_capacity_mut().par_chunks_mut(block).zip(src.par_chunks(block));
    blocks.with_min_len(min_chunks(block)).for_each(|(d, s)| {
        for (j, d) in d.chunks_exact_mut(rows).enumerate() {
            d.iter_mut().zip(s[j..].iter().step_by(cols)).for_each(|(d, &v)| {
                d.write(v);
            });
        }
    });
    // SAFETY: each block of `dst` was written in full, `rows` values for
    // each of its `cols` columns (no partial block, asserted above).
    unsafe { dst.set_len(src.len()) };
    dst
}

/// Whether a convolution over `n` images copies its patches channels-last
/// (see [`Geom`]). That costs a transpose of the kernel per call, which a
/// few images pay for; below one image per rayon thread, the planar path
/// also splits a transposed convolution's channels between threads.
fn channels_last(n: usize) -> bool {
    n >= CHANNELS_LAST_MIN_IMAGES.max(rayon::current_num_threads())
}

/// The fewest input and output channels for which a batch runs a
/// convolution by Winograd. Its GEMMs are O wide and C deep, and its
/// output transform works per O values; narrow layers lost to patches
/// (batch 32, one thread, patches / Winograd): stride-2 16 → 32 channels
/// at 32x32 1.7 / 2.2 ms, transposed 32 → 16 and 64 → 32 from 16x16
/// 1.9 / 3.6 and 5.6 / 7.1 ms, the pixel-shuffle RGB layer (64 → 12) at
/// batch 64 19 / 23 ms; from 32 into 64 channels on they win (32 → 64 at
/// 32x32 5.3 / 4.8 ms, 128 → 64 from 8x8 4.6 / 3.9).
const WINOGRAD_MIN_IN: usize = 32;
const WINOGRAD_MIN_OUT: usize = 64;

/// Whether a 3x3 stride-1 or 4x4 stride-2 convolution over `n` images
/// from `c` to `o` channels runs by Winograd: a batch, as for
/// [`channels_last`] patches (one image would pay the kernel transform, 16
/// or 36 values per (c, o), alone), of layers wide enough.
fn winograd_batch(n: usize, c: usize, o: usize) -> bool {
    channels_last(n) && c >= WINOGRAD_MIN_IN && o >= WINOGRAD_MIN_OUT
}

/// Geometry of one convolution (square kernel, equal stride/padding on both axes).
///
/// Patches are copied in one of two layouts. Planar ([`Self::im2col`]):
/// one GEMM row per (c, kh, kw), one column per output pixel, copied in
/// runs of one output row. Channels-last ([`Self::im2row`]): an image
/// first goes into a scratch buffer as (H+2p) x (W+2p) x C with a zero
/// border, where the K taps of one kernel row under an output pixel are
/// K*C consecutive values; each output pixel's patch is then K copies of
/// that many values, into one row per pixel in (kh, kw, c) order.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geom {
    pub(super) k: usize,
    pub(super) stride: usize,
    pub(super) pad: usize,
}

impl Geom {
    /// Whether this is a 3x3 stride-1 convolution that keeps the size,
    /// which a batch can run by Winograd's F(2x2, 3x3) ([`winograd`]).
    fn winograd(&self) -> bool {
        (self.k, self.stride, self.pad) == (3, 1, 1)
    }

    /// Whether this is a 4x4 stride-2 convolution with padding 1, which a
    /// batch can run by Winograd's F(2x2, 2x2) phase by phase.
    fn phases(&self) -> bool {
        (self.k, self.stride, self.pad) == (4, 2, 1)
    }

    /// Output side of a convolution over `size` input pixels.
    pub(super) fn conv_out(&self, size: usize) -> usize {
        (size + 2 * self.pad - self.k) / self.stride + 1
    }

    /// Output side of a transposed convolution over `size` input pixels
    /// (output padding 0): the `size` whose `conv_out` is `size`.
    pub(super) fn conv_t_out(&self, size: usize) -> usize {
        (size - 1) * self.stride + self.k - 2 * self.pad
    }

    /// The outputs `lo..hi` (of `0..outs`) whose kernel tap `kk` lands
    /// inside `0..size`, i.e. `0 <= o * stride + kk - pad < size`. Computed
    /// once per tap so the copy loops need no per-pixel bounds tests.
    fn inside(&self, outs: usize, kk: usize, size: usize) -> (usize, usize) {
        let lo = self.pad.saturating_sub(kk).div_ceil(self.stride);
        let hi = if size + self.pad > kk { ((size - 1 + self.pad - kk) / self.stride + 1).min(outs) } else { 0 };
        (lo.min(hi), hi)
    }

    /// Copies the patches of `x` (C x H x W) into columns `col0..col0 +
    /// Ho*Wo` of `cols` (C*K*K rows, `ld` apart), so that a group of images
    /// can sit side by side in one GEMM operand; a 4x4 stride-2 layer's
    /// from [`Phases`].
    pub(super) fn im2col(&self, x: &[f32], (c, h, w): (usize, usize, usize), cols: &mut [f32], ld: usize, col0: usize) {
        let (ho, wo) = (self.conv_out(h), self.conv_out(w));
        if let Some(shape) = PhaseShape::of(*self, (h, w)) {
            return with_spare(shape.len(), |planes| {
                let mut phases = shape.on(planes);
                for (ci, plane) in x.chunks_exact(h * w).take(c).enumerate() {
                    phases.split(plane);
                    for tap in 0..16 {
                        let row = &mut cols[(ci * 16 + tap) * ld + col0..][..ho * wo];
                        for (oh, out) in row.chunks_exact_mut(wo).enumerate() {
                            out.copy_from_slice(phases.run(tap, oh));
                        }
                    }
                }
            });
        }
        let (k, s) = (self.k, self.stride);
        for ci in 0..c {
            let plane = &x[ci * h * w..(ci + 1) * h * w];
            for kh in 0..k {
                let (oh0, oh1) = self.inside(ho, kh, h);
                for kw in 0..k {
                    let (ow0, ow1) = self.inside(wo, kw, w);
                    let row = &mut cols[((ci * k + kh) * k + kw) * ld + col0..][..ho * wo];
                    if ow0 == ow1 {
                        row.fill(0.0);
                        continue;
                    }
                    row[..oh0 * wo].fill(0.0);
                    row[oh1 * wo..].fill(0.0);
                    // Both subtractions stay >= 0 on the `inside` ranges.
                    let iw0 = ow0 * s + kw - self.pad;
                    for oh in oh0..oh1 {
                        let out = &mut row[oh * wo..(oh + 1) * wo];
                        out[..ow0].fill(0.0);
                        out[ow1..].fill(0.0);
                        let src = &plane[(oh * s + kh - self.pad) * w + iw0..];
                        let out = &mut out[ow0..ow1];
                        if s == 1 {
                            out.copy_from_slice(&src[..out.len()]);
                        } else {
                            out.iter_mut().zip(src.iter().step_by(s)).for_each(|(o, v)| *o = *v);
                        }
                    }
                }
            }
        }
    }

    /// Adds columns `col0..col0 + Hi*Wi` of `cols` (C*K*K rows, `ld` apart:
    /// the patches a conv over `y` would see) into `y` (C x H x W): the
    /// adjoint of `im2col` (through [`Phases`] for a 4x4 stride-2 layer).
    /// `y` is not cleared first: the caller hands in what the columns add
    /// onto (zeros, or a transposed convolution's bias).
    pub(super) fn col2im(&self, cols: &[f32], ld: usize, col0: usize, (c, h, w): (usize, usize, usize), y: &mut [f32]) {
        let (hi, wi) = (self.conv_out(h), self.conv_out(w));
        if let Some(shape) = PhaseShape::of(*self, (h, w)) {
            return with_spare(shape.len(), |planes| {
                let mut phases = shape.on(planes);
                for (ci, plane) in y.chunks_exact_mut(h * w).take(c).enumerate() {
                    phases.clear();
                    for tap in 0..16 {
                        let row = &cols[(ci * 16 + tap) * ld + col0..][..hi * wi];
                        for (ih, src) in row.chunks_exact(wi).enumerate() {
                            phases.run_mut(tap, ih).iter_mut().zip(src).for_each(|(d, v)| *d += v);
                        }
                    }
                    phases.add_merged(plane);
                }
            });
        }
        let (k, s) = (self.k, self.stride);
        for ci in 0..c {
            let plane = &mut y[ci * h * w..(ci + 1) * h * w];
            for kh in 0..k {
                let (ih0, ih1) = self.inside(hi, kh, h);
                for kw in 0..k {
                    let (iw0, iw1) = self.inside(wi, kw, w);
                    if iw0 == iw1 {
                        continue;
                    }
                    let row = &cols[((ci * k + kh) * k + kw) * ld + col0..][..hi * wi];
                    let ow0 = iw0 * s + kw - self.pad;
                    for ih in ih0..ih1 {
                        let src = &row[ih * wi + iw0..ih * wi + iw1];
                        let dst = &mut plane[(ih * s + kh - self.pad) * w + ow0..];
                        if s == 1 {
                            dst.iter_mut().zip(src).for_each(|(d, v)| *d += v);
                        } else {
                            dst.iter_mut().step_by(s).zip(src).for_each(|(d, v)| *d += v);
                        }
                    }
                }
            }
        }
    }

    /// The length of an image of `c` x `h` x `w` once padded channels-last.
    fn padded_len(&self, (c, h, w): Dims) -> usize {
        (h + 2 * self.pad) * (w + 2 * self.pad) * c
    }

    /// Writes `x` (C x H x W) into `xp` channels-last with a zero border.
    fn pad_hwc(&self, x: &[f32], (c, h, w): Dims, xp: &mut [f32]) {
        let (p, line) = (self.pad, (w + 2 * self.pad) * c);
        xp[..p * line].fill(0.0);
        xp[(h + p) * line..].fill(0.0);
        for (y, row) in xp[p * line..(h + p) * line].chunks_exact_mut(line).enumerate() {
            row[..p * c].fill(0.0);
            row[(w + p) * c..].fill(0.0);
            transpose(&x[y * w..], h * w, &mut row[p * c..], c, (c, w), Store::Set);
        }
    }

    /// Adds the interior of `yp` (channels-last with a border, as written
    /// by [`Self::pad_hwc`]) into `y` (C x H x W): its adjoint.
    fn add_unpadded(&self, yp: &[f32], (c, h, w): Dims, y: &mut [f32]) {
        let (p, line) = (self.pad, (w + 2 * self.pad) * c);
        for (r, row) in yp[p * line..(h + p) * line].chunks_exact(line).enumerate() {
            transpose(&row[p * c..], c, &mut y[r * w..], h * w, (w, c), Store::Add);
        }
    }

    /// For each output pixel of a convolution over `xp` (a padded
    /// channels-last image of `dims`), its patch as one row of `rows`:
    /// K*K*C values in (kh, kw, c) order.
    fn im2row(&self, xp: &[f32], dims: Dims, rows: &mut [f32]) {
        self.patches(dims, |at, r| rows[r..][..at.len()].copy_from_slice(&xp[at]));
    }

    /// The adjoint of [`Self::im2row`]: adds each row of `rows` back onto
    /// the patch it came from in `yp`.
    fn row2im(&self, rows: &[f32], dims: Dims, yp: &mut [f32]) {
        self.patches(dims, |at, r| yp[at].iter_mut().zip(&rows[r..]).for_each(|(d, v)| *d += v));
    }

    /// Calls `f(range in the padded image, offset in the rows)` for each
    /// kernel row of each output pixel's patch: K*C consecutive values on
    /// both sides.
    fn patches(&self, (c, h, w): Dims, mut f: impl FnMut(Range<usize>, usize)) {
        let (k, s, wp) = (self.k, self.stride, w + 2 * self.pad);
        let (ho, wo, span) = (self.conv_out(h), self.conv_out(w), self.k * c);
        for oh in 0..ho {
            for ow in 0..wo {
                let r = (oh * wo + ow) * k * span;
                for kh in 0..k {
                    let at = ((oh * s + kh) * wp + ow * s) * c;
                    f(at..at + span, r + kh * span);
                }
            }
        }
    }
}

/// One channel of a 4x4 stride-2 convolution's input (padding 1, even
/// sides), zero-padded and split by the parity of its rows and columns
/// into four planes of (H/2 + 1) x (W/2 + 1): tap (kh, kw) of output pixel
/// (oh, ow) is value (oh + kh/2, ow + kw/2) of plane (kh % 2, kw % 2), so
/// each kernel tap reads runs of consecutive values, a whole output row
/// long. The same planes collect a transposed convolution's columns.
///
/// Why: the planar patches of a stride-2 layer are every other value of
/// the input, which copied value by value (and added back so in the
/// transposed convolution) took longer than their GEMM in the RGB layers,
/// which run planar (D's first layer, 3 into 64 channels; the transposed
/// convolution's RGB layer, 64 into 3).
struct Phases<'a> {
    planes: &'a mut [f32],
    shape: PhaseShape,
}

/// The sides of [`Phases`]: of one plane, and of the output (or input)
/// the taps run over.
#[derive(Clone, Copy)]
struct PhaseShape {
    hp: usize,
    wp: usize,
    wo: usize,
}

impl PhaseShape {
    /// The shape of the planes for one channel of `h` x `w` under `g`, if
    /// `g` is a 4x4 stride-2 convolution with padding 1 over even sides.
    fn of(g: Geom, (h, w): (usize, usize)) -> Option<Self> {
        let fits = g.phases() && h.is_multiple_of(2) && w.is_multiple_of(2) && h * w > 0;
        fits.then_some(Self { hp: h / 2 + 1, wp: w / 2 + 1, wo: w / 2 })
    }

    /// The values of the four planes.
    fn len(self) -> usize {
        4 * self.hp * self.wp
    }

    /// The planes in `planes` (at least [`Self::len`] values), zeroed.
    fn on(self, planes: &mut [f32]) -> Phases<'_> {
        let planes = &mut planes[..self.len()];
        planes.fill(0.0);
        Phases { planes, shape: self }
    }
}

impl Phases<'_> {
    /// The (row, column) parity plane `p` (0..4), starting at its row `i`.
    fn at(&self, p: usize, i: usize) -> usize {
        (p * self.shape.hp + i) * self.shape.wp
    }

    /// Padded row `r` of the input, as (plane of its row parity, row).
    fn row(r: usize) -> (usize, usize) {
        (2 * (r % 2), r / 2)
    }

    /// Splits `plane` (H x W) into the four planes; their borders stay zero.
    fn split(&mut self, plane: &[f32]) {
        for (y, src) in plane.chunks_exact(2 * (self.shape.wp - 1)).enumerate() {
            // Padded column s = x + 1: even x at odd s (plane parity 1,
            // column x / 2), odd x at even s (parity 0, column x / 2 + 1).
            let (p, i) = Self::row(y + 1);
            let (odd, even) = (self.at(p + 1, i), self.at(p, i) + 1);
            for (j, pair) in src.chunks_exact(2).enumerate() {
                self.planes[odd + j] = pair[0];
                self.planes[even + j] = pair[1];
            }
        }
    }

    /// Kernel tap `tap` (kh * 4 + kw) of output row `oh`: `wo` values.
    fn run(&self, tap: usize, oh: usize) -> &[f32] {
        let (kh, kw) = (tap / 4, tap % 4);
        &self.planes[self.at(2 * (kh % 2) + kw % 2, oh + kh / 2) + kw / 2..][..self.shape.wo]
    }

    /// [`Self::run`], to add into.
    fn run_mut(&mut self, tap: usize, oh: usize) -> &mut [f32] {
        let (kh, kw) = (tap / 4, tap % 4);
        let at = self.at(2 * (kh % 2) + kw % 2, oh + kh / 2) + kw / 2;
        &mut self.planes[at..][..self.shape.wo]
    }

    fn clear(&mut self) {
        self.planes.fill(0.0);
    }

    /// Adds the planes' interior back into `plane` (H x W): the adjoint of
    /// [`Self::split`].
    fn add_merged(&self, plane: &mut [f32]) {
        for (y, dst) in plane.chunks_exact_mut(2 * (self.shape.wp - 1)).enumerate() {
            let (p, i) = Self::row(y + 1);
            let (odd, even) = (self.at(p + 1, i), self.at(p, i) + 1);
            for (j, pair) in dst.chunks_exact_mut(2).enumerate() {
                pair[0] += self.planes[odd + j];
                pair[1] += self.planes[even + j];
            }
        }
    }
}

/// A GEMM operand stored row-major with `ld` values between stored rows,
/// read as it is or transposed.
#[derive(Clone, Copy)]
pub(super) struct Operand<'a> {
    data: &'a [f32],
    transposed: bool,
    ld: usize,
}

impl<'a> Operand<'a> {
    pub(super) fn plain(data: &'a [f32], ld: usize) -> Self {
        Self { data, transposed: false, ld }
    }

    pub(super) fn transposed(data: &'a [f32], ld: usize) -> Self {
        Self { data, transposed: true, ld }
    }

    /// (column stride, row stride) of the matrix as read, and the length it
    /// needs for `rows` x `cols`.
    fn strides(&self, rows: usize, cols: usize) -> (isize, isize, usize) {
        if self.transposed {
            (self.ld as isize, 1, (cols - 1) * self.ld + rows)
        } else {
            (1, self.ld as isize, (rows - 1) * self.ld + cols)
        }
    }
}

/// Row-major `dst (m x n) = [dst +] a (m x k) * b (k x n)`.
pub(super) fn matmul(m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, a: Operand, b: Operand) {
    assert!(dst.len() >= m * n, "matmul: destination too short");
    // SAFETY: `dst` holds the m x n values, initialized.
    unsafe { gemm_into(m, n, k, dst.as_mut_ptr(), accumulate, a, b) }
}

/// [`matmul`] into `dst`, row-major with m x n values.
///
/// # Safety
///
/// `dst` must be valid for m x n writes and, when `accumulate`, reads of
/// initialized values.
unsafe fn gemm_into(m: usize, n: usize, k: usize, dst: *mut f32, accumulate: bool, a: Operand, b: Operand) {
    if m == 0 || n == 0 || k == 0 {
        if !accumulate {
            // SAFETY: m x n writes, as the caller promised.
            unsafe { std::ptr::write_bytes(dst, 0, m * n) };
        }
        return;
    }
    let (a_cs, a_rs, a_len) = a.strides(m, k);
    let (b_cs, b_rs, b_len) = b.strides(k, n);
    assert!(a.data.len() >= a_len && b.data.len() >= b_len, "matmul: operands too short");
    // SAFETY: the assert above keeps every element the strides reach inside
    // its slice; `dst` is the caller's.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// A custom-op argument as candle hands it over.
pub(super) type Arg<'a> = (&'a CpuStorage, &'a Layout);

fn dims4(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    l.shape().dims4()
}

/// `conv(x, w) [+ b]`: x (N, C, H, W), w (O, C, K, K), b (O) -> (N, O, Ho, Wo).
/// Bias-free inside the other ops' backward; a layer runs [`WithBias`]`<Conv>`.
/// The second field holds the kernel's Winograd transform once made (see
/// [`TransformCell`]), the third a constant kernel's panels for one image
/// of 4x4 output pixels, the fourth its Winograd panels for one larger
/// image ([`KeptKernel`]).
struct Conv(Geom, TransformCell, Option<Arc<Panels>>, Option<Arc<Single>>);

impl Convolution for Conv {
    const BIASED: &'static str = "ganscope-conv2d-bias";
    const NORMED: &'static str = "ganscope-conv2d-batch-norm";

    /// The forward; `bias`, when given, fills each output row before the
    /// GEMM adds to it.
    fn forward(&self, (s1, l1): Arg, (s2, l2): Arg, bias: Option<Arg>) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (slice(s1, l1, "conv2d input")?, slice(s2, l2, "conv2d kernel")?);
        let bias = bias.map(|(s, l)| slice(s, l, "conv2d bias")).transpose()?;
        let ((n, c, h, wd), (o, c2, k, _)) = (dims4(l1)?, dims4(l2)?);
        if c != c2 || k != self.0.k {
            candle_core::bail!("conv2d: input has {c} channels, kernel {c2}x{k}x{k}");
        }
        check_bias(bias, o)?;
        let (ho, wo) = (self.0.conv_out(h), self.0.conv_out(wd));
        if let Some(single) = &self.3 {
            let mut y = vec![0f32; n * o * ho * wo];
            for (img, out) in x.chunks_exact(c * h * wd).zip(y.chunks_exact_mut(o * ho * wo)) {
                single.conv(img, (h, wd), bias, out);
            }
            return Ok((CpuStorage::F32(y), Shape::from((n, o, ho, wo))));
        }
        let batch = Batch { x, n, dims: (c, h, wd), wt: w, o, bias };
        if winograd_batch(n, c, o) && (self.0.winograd() || self.0.phases()) {
            let y = if self.0.winograd() {
                winograd::conv3x3(&batch, Kernel::Conv, &self.1)
            } else {
                winograd::conv4x4s2(&batch, &self.1)
            };
            return Ok((CpuStorage::F32(y), Shape::from((n, o, ho, wo))));
        }
        if self.0.winograd() && o < CHANNELS_LAST_MIN_OUT {
            let y = shifted_taps(&batch);
            return Ok((CpuStorage::F32(y), Shape::from((n, o, ho, wo))));
        }
        if channels_last(n) && o >= CHANNELS_LAST_MIN_OUT && !planar_rgb(self.0, c) {
            // The kernel as O x (kh, kw, c): the order of a patch row.
            let wt = transpose_blocks(w, (c, k * k));
            let y = patch_rows(&Batch { wt: &wt, ..batch }, self.0);
            return Ok((CpuStorage::F32(y), Shape::from((n, o, ho, wo))));
        }
        let (ckk, hw) = (c * k * k, ho * wo);
        if (n < rayon::current_num_threads() && o * ckk * hw >= SPLIT_MIN_MACS) || self.taps_4x4((h, wd)) {
            let mut y = vec![0f32; n * o * hw];
            self.split_channels(x, w, bias, (c, h, wd), &mut y);
            return Ok((CpuStorage::F32(y), Shape::from((n, o, ho, wo))));
        }
        // A group's GEMM has `ld` columns, `hw` per image; more than one
        // image goes through a product buffer.
        let lens = |ld| [0, ckk * ld, if ld > hw { o * ld } else { 0 }];
        let y = batch.by_groups((hw, hw), lens, |images, out, ld, [_, cols, prod]| {
            let gi = ld / hw;
            // A group of one multiplies straight into the output, which
            // then starts at the bias.
            let (out, filled) = match bias {
                Some(b) if gi == 1 => out.starting_at(b, hw),
                _ => out.zeroed(),
            };
            for (t, img) in images.chunks_exact(c * h * wd).enumerate() {
                self.0.im2col(img, (c, h, wd), cols, ld, t * hw);
            }
            let (dst, add) = if gi == 1 {
                (&mut *out, bias.is_some())
            } else {
                let add = fill_rows(prod, ld, bias);
                (&mut *prod, add)
            };
            match &self.2 {
                Some(panels) if panels.serves(0, ld) => panels.product(0, cols, dst, add),
                _ => matmul(o, ld, ckk, dst, add, Operand::plain(w, ckk), Operand::plain(cols, ld)),
            }
            if gi > 1 {
                scatter(prod, gi, o, hw, out);
            }
            filled
        });
        Ok((CpuStorage::F32(y), Shape::from((n, o, ho, wo))))
    }
}

/// A batch's convolution from channels-last patches (see [`Geom`]), its
/// kernel `batch.wt` as O x (kh, kw, c), the order of a patch row: per
/// group of images, the patch rows (pixels x K K C) times the kernel's
/// transpose, a pixels x O product (so that the GEMM reads the patch rows
/// in place; as the other operand it would pack them), transposed into
/// the output planes.
fn patch_rows(batch: &Batch, g: Geom) -> Vec<f32> {
    let ((c, h, wd), o) = (batch.dims, batch.o);
    let (hw, ckk) = (g.conv_out(h) * g.conv_out(wd), c * g.k * g.k);
    let lens = |ld| [g.padded_len((c, h, wd)), ckk * ld, o * ld];
    batch.by_groups((hw, hw), lens, |images, out, ld, [xp, rows, prod]| {
        for (img, rows) in images.chunks_exact(c * h * wd).zip(rows.chunks_exact_mut(hw * ckk)) {
            g.pad_hwc(img, (c, h, wd), xp);
            g.im2row(xp, (c, h, wd), rows);
        }
        if let Some(b) = batch.bias {
            prod.chunks_exact_mut(o).for_each(|px| px.copy_from_slice(b));
        }
        let wt = Operand::transposed(batch.wt, ckk);
        matmul(ld, o, ckk, prod, batch.bias.is_some(), Operand::plain(rows, ckk), wt);
        out.set_from(prod, (o, hw))
    })
}

/// A 3x3 stride-1 convolution with padding 1 into a few channels (the RGB
/// layer) as nine GEMMs, one per tap, each reading a group's zero-padded
/// images (C rows of planes side by side, `P` = (H+2)(W+2) columns each)
/// shifted by the tap's offset: output pixel (y, x) of image t is column
/// `t P + y (W+2) + x`, and the columns past each image's last row are
/// computed and dropped.
///
/// Why: such layers keep the planar patch path, whose copies (9 per input
/// value) cost more than their GEMM of a handful of rows: 7% of a 28 px
/// pixel-shuffle generator's batch of 64 on two threads (`perf`).
fn shifted_taps(batch: &Batch) -> Vec<f32> {
    let ((c, h, wd), o) = (batch.dims, batch.o);
    let (wp, plane, hw) = (wd + 2, (h + 2) * (wd + 2), h * wd);
    // O x (tap, C): a tap's (O x C) kernel is every 9C-th run of C values.
    let wt = transpose_blocks(batch.wt, (c, 9));
    // Columns for `gi` images in whole SIMD vectors (16 f32 with AVX-512),
    // or the gemm crate copies the shifted operand into its own layout for
    // every tap; the last taps read up to 2 rows and 2 values further.
    let cols = |gi: usize| (gi * plane).next_multiple_of(16);
    let ld = |gi: usize| cols(gi) + 2 * wp + 2;
    let lens = |pixels: usize| [c * ld(pixels / hw), o * cols(pixels / hw), 0];
    batch.by_groups((hw, hw), lens, |images, out, pixels, [xs, prod, _]| {
        let (out, filled) = out.zeroed();
        let gi = pixels / hw;
        let (cols, ld) = (cols(gi), ld(gi));
        for (ci, row) in xs.chunks_exact_mut(ld).enumerate() {
            let (planes, tail) = row.split_at_mut(gi * plane);
            tail.fill(0.0);
            for (img, padded) in images.chunks_exact(c * hw).zip(planes.chunks_exact_mut(plane)) {
                padded[..wp].fill(0.0);
                padded[(h + 1) * wp..].fill(0.0);
                for (src, dst) in img[ci * hw..][..hw].chunks_exact(wd).zip(padded[wp..].chunks_exact_mut(wp)) {
                    dst[0] = 0.0;
                    dst[1..=wd].copy_from_slice(src);
                    dst[wd + 1] = 0.0;
                }
            }
        }
        let add = fill_rows(prod, cols, batch.bias);
        for tap in 0..9 {
            let taps = Operand::plain(&xs[(tap / 3) * wp + tap % 3..], ld);
            matmul(o, cols, c, prod, add || tap > 0, Operand::plain(&wt[tap * c..], 9 * c), taps);
        }
        for (t, img) in out.chunks_exact_mut(o * hw).enumerate() {
            for (dst, row) in img.chunks_exact_mut(hw).zip(prod.chunks_exact(cols)) {
                for (y, dst) in dst.chunks_exact_mut(wd).enumerate() {
                    dst.copy_from_slice(&row[t * plane + y * wp..][..wd]);
                }
            }
        }
        filled
    })
}

impl Conv {
    /// The planar forward over fewer images than threads (the explorer's
    /// batch of one) for a layer worth two hand-offs to the pool: after one
    /// im2col per image, the threads split its output channels. One 4x4
    /// image through a 3x3 kernel in panels ([`Self::taps_4x4`]) comes here
    /// on any number of threads, and skips the im2col.
    fn split_channels(&self, x: &[f32], w: &[f32], bias: Option<&[f32]>, (c, h, wd): Dims, y: &mut [f32]) {
        let (k, hw) = (self.0.k, self.0.conv_out(h) * self.0.conv_out(wd));
        let ckk = c * k * k;
        let o = w.len() / ckk;
        let mut per_part = o.div_ceil(rayon::current_num_threads().max(1));
        let panels = self.2.as_deref().filter(|p| p.serves(0, hw));
        if panels.is_some() {
            // Whole panels per part.
            per_part = per_part.next_multiple_of(narrow::ROWS);
        }
        let taps = self.taps_4x4((h, wd));
        let mut cols = vec![0f32; if taps { 0 } else { ckk * hw }];
        for (img, out) in x.chunks_exact(c * h * wd).zip(y.chunks_exact_mut(o * hw)) {
            if !taps {
                self.0.im2col(img, (c, h, wd), &mut cols, hw, 0);
            }
            let part = |(q, rows): (usize, &mut [f32])| {
                let o0 = q * per_part;
                let add = fill_rows(rows, hw, bias.map(|b| &b[o0..]));
                match panels {
                    Some(panels) if taps => panels.conv3x3_4x4(o0, img, rows, add),
                    Some(panels) => panels.product(o0, &cols, rows, add),
                    None => {
                        let (w, cols) = (Operand::plain(&w[o0 * ckk..], ckk), Operand::plain(&cols, hw));
                        matmul(rows.len() / hw, hw, ckk, rows, add, w, cols);
                    }
                }
            };
            if per_part >= o {
                part((0, out));
            } else {
                out.par_chunks_mut(per_part * hw).enumerate().for_each(part);
            }
        }
    }

    /// Whether a call over H x W pixels is one 4x4 image through a 3x3
    /// convolution with padding 1 whose kernel is in panels (a
    /// pixel-shuffle generator's first layer for the explorer), which
    /// `narrow` multiplies tap by tap.
    fn taps_4x4(&self, (h, w): (usize, usize)) -> bool {
        self.0.winograd() && (h, w) == (4, 4) && self.2.as_deref().is_some_and(|p| p.serves(0, narrow::COLS))
    }
}

/// The gradients of a convolution with bias.
type Grads3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

/// What differs between the two convolutions' ops with a bias.
pub(super) trait Convolution: CustomOp2 + Send + Sync + 'static {
    /// The op's name with its bias.
    const BIASED: &'static str;

    /// The op's name with its bias and a BatchNorm after it ([`conv_bn`]).
    const NORMED: &'static str;

    /// The forward, adding `bias` when given.
    fn forward(&self, x: Arg, w: Arg, bias: Option<Arg>) -> Result<(CpuStorage, Shape)>;

    /// The bias gradient for the output gradient `dy` (N, C, H, W): one
    /// value per channel.
    fn bias_grad(&self, dy: &Tensor) -> Result<Tensor> {
        bias::channel_sum(dy)
    }
}

/// A convolution plus its bias and the activation after it as one op, the
/// layer's; its backward takes `dy` back through the activation, then runs
/// the bias-free op's backward (which serves the other ops' backward) and
/// sums the result per channel for the bias.
pub(super) struct WithBias<C> {
    pub(super) conv: C,
    pub(super) act: Act,
}

impl<C: Convolution> CustomOp3 for WithBias<C> {
    fn name(&self) -> &'static str {
        C::BIASED
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _timer = super::profile::Timer::start(self.name(), &[l1, l2, l3]);
        let (mut y, shape) = self.conv.forward((s1, l1), (s2, l2), Some((s3, l3)))?;
        if let CpuStorage::F32(v) = &mut y {
            self.act.apply_in_place(v);
        }
        Ok((y, shape))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, b: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Grads3> {
        let dy = self.act.grad_from_output(y, dy)?;
        let (dx, dw) = self.conv.bwd(x, w, y, &dy)?;
        Ok((dx, dw, tracked(b, || self.conv.bias_grad(&dy))?))
    }
}

/// Fails unless `bias`, when given, has one value per output channel.
fn check_bias(bias: Option<&[f32]>, o: usize) -> Result<()> {
    match bias {
        Some(b) if b.len() != o => candle_core::bail!("convolution: {o} output channels but {} biases", b.len()),
        _ => Ok(()),
    }
}

/// Fills row `i` (`len` values) of `dst` with `bias[i]`; whether there was
/// a bias, i.e. whether the GEMM should add to `dst`.
fn fill_rows(dst: &mut [f32], len: usize, bias: Option<&[f32]>) -> bool {
    let Some(b) = bias else { return false };
    dst.chunks_exact_mut(len).zip(b).for_each(|(row, &v)| row.fill(v));
    true
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "ganscope-conv2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let _timer = super::profile::Timer::start(self.name(), &[l1, l2]);
        self.forward((s1, l1), (s2, l2), None)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, _, h, wd) = x.dims4()?;
        let dy = dy.contiguous()?;
        let winograd = for_input_grad(&self.1);
        let dx = tracked(x, || {
            dy.apply_op2(w, ConvT { g: self.0, out_h: h, out_w: wd, rows: None, panels: None, winograd })
        })?;
        let dw = tracked(w, || x.apply_op2(&dy, WeightGrad(self.0)))?;
        Ok((dx, dw))
    }
}

/// `conv_t(x, w)`: x (N, C, Hi, Wi), w (C, O, K, K) -> (N, O, out_h, out_w),
/// with the forms of `w` a [`KeptKernel`] holds when it is constant: its
/// rows for the planar path, its Winograd transform for a batch's.
struct ConvT {
    g: Geom,
    out_h: usize,
    out_w: usize,
    rows: Option<Arc<[f32]>>,
    panels: Option<Arc<Panels>>,
    winograd: TransformCell,
}

/// Where a convolution op keeps its kernel's Winograd transform once made:
/// a [`KeptKernel`]'s cell, shared by every call of a layer whose weights
/// never change, or the op's own, which its backward reads.
type TransformCell = Arc<OnceLock<Transformed>>;

/// The cell for the input gradient of the op whose cell is `forward`: the
/// forward's transform read for the other kind of convolution
/// ([`Transformed::transposed`]) when it made one, empty otherwise.
///
/// Why: a kernel's transform is a GEMM over all its values, and each input
/// gradient made it again for the weights its forward had just used: 8 of
/// the 18 transforms of a 32 px training step. Reused, they took 5.8 ms of
/// a one-thread pixel-shuffle step (~180 ms) instead of 7.4.
fn for_input_grad(forward: &TransformCell) -> TransformCell {
    Arc::new(forward.get().map_or_else(OnceLock::new, |u| OnceLock::from(u.transposed())))
}

/// What a constant kernel is turned into, made on the first call that
/// needs it and kept (by layers whose weights never change):
///
/// - a transposed convolution's (C, O, K, K): its rows, the (O K K) x C
///   matrix row-major, for the planar path. A batch below one image per
///   thread (the explorer's one image) runs a GEMM of that matrix by the C
///   x (H W) input. In place it is the kernel transposed, whose columns lie
///   O K K values (a power of two) apart, and the gemm crate walks them so,
///   uncopied: the 64 px generator's 512 → 256 layer's GEMM for one image
///   took 2.1 ms on one AVX2 core (30 GFLOP/s), 0.8 ms from the rows
///   (BENCHMARKS.md).
/// - its Winograd transform, for batches of wide layers (the explorer's
///   strips, `sample`, `interpolate`): 36 C O values for a 4x4 stride-2
///   transposed convolution, 16 C O for a 3x3 convolution (36 C O where
///   the image's sides are multiples of 4, by F(4x4, 3x3)); a GEMM per call
///   otherwise, a quarter of the call for a strip of 8 images.
/// - for one image of 4x4 pixels (a generator's first layer, by far its
///   largest kernel) on an AVX-512 CPU, the GEMM's matrix (a convolution's
///   kernel, a transposed one's rows) in panels for `narrow`'s kernel.
/// - for one larger image through a 3x3 convolution on such a CPU, its
///   Winograd transform in panels, one set per position (`winograd::single`).
#[derive(Default)]
pub struct KeptKernel {
    rows: OnceLock<Arc<[f32]>>,
    winograd: Arc<OnceLock<Transformed>>,
    panels: OnceLock<Option<Arc<Panels>>>,
    single: OnceLock<Option<Arc<Single>>>,
}

impl KeptKernel {
    /// The cell for the Winograd transform of a call over `n` images:
    /// `kept`'s for a batch (only batches run by Winograd), a fresh one
    /// otherwise.
    fn winograd(kept: Option<&Self>, n: usize) -> TransformCell {
        kept.filter(|_| channels_last(n)).map_or_else(Default::default, |k| Arc::clone(&k.winograd))
    }

    /// The Winograd panels of a 3x3 convolution's kernel `w` (O, C, 3, 3)
    /// for a call over `n` images of H x W pixels: made on the first call,
    /// kept after; None unless [`Single`] runs the call.
    fn single(
        kept: Option<&Self>,
        g: Geom,
        n: usize,
        (h, wd): (usize, usize),
        w: &Tensor,
    ) -> Result<Option<Arc<Single>>> {
        let (o, c, _, _) = w.dims4()?;
        match (kept, Single::side(h, wd)) {
            (Some(this), Some(side)) if g.winograd() && !channels_last(n) && o >= CHANNELS_LAST_MIN_OUT => {
                super::kept(&this.single, || {
                    let wt = w.flatten_all()?.to_vec1::<f32>()?;
                    Ok(winograd::single(&this.winograd, &wt, (c, o), side).map(Arc::new))
                })
            }
            _ => Ok(None),
        }
    }

    /// The rows of `w` (C, O, K, K): made on the first call, kept after.
    fn rows(&self, w: &Tensor) -> Result<Arc<[f32]>> {
        kept(&self.rows, || {
            let (c, o, kh, kw) = w.dims4()?;
            let src = w.flatten_all()?.to_vec1::<f32>()?;
            let mut rows = vec![0f32; src.len()];
            transpose(&src, o * kh * kw, &mut rows, c, (c, o * kh * kw), Store::Set);
            Ok(rows.into())
        })
    }

    /// The panels of `kept`'s GEMM matrix, `rows` x k, for a call whose
    /// planar GEMM has `cols` columns: made by `matrix` on the first call,
    /// kept after; None unless `narrow`'s kernel runs that GEMM.
    fn panels(
        kept: Option<&Self>,
        cols: usize,
        rows: usize,
        matrix: impl FnOnce() -> Result<Arc<[f32]>>,
    ) -> Result<Option<Arc<Panels>>> {
        match kept {
            Some(this) if cols == narrow::COLS => super::kept(&this.panels, || {
                let a = matrix()?;
                Ok(Panels::new(&a, rows, a.len() / rows.max(1)).map(Arc::new))
            }),
            _ => Ok(None),
        }
    }
}

impl Convolution for ConvT {
    const BIASED: &'static str = "ganscope-conv-transpose2d-bias";
    const NORMED: &'static str = "ganscope-conv-transpose2d-batch-norm";

    /// The forward; `bias`, when given, fills each output plane before the
    /// columns are added into it.
    fn forward(&self, (s1, l1): Arg, (s2, l2): Arg, bias: Option<Arg>) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (slice(s1, l1, "conv_transpose2d input")?, slice(s2, l2, "conv_transpose2d kernel")?);
        let bias = bias.map(|(s, l)| slice(s, l, "conv_transpose2d bias")).transpose()?;
        let ((n, c, hi, wi), (c2, o, k, _)) = (dims4(l1)?, dims4(l2)?);
        if c != c2 || k != self.g.k {
            candle_core::bail!("conv_transpose2d: input has {c} channels, kernel {c2}x{o}x{k}x{k}");
        }
        let (h, wd) = (self.out_h, self.out_w);
        if self.g.conv_out(h) != hi || self.g.conv_out(wd) != wi {
            candle_core::bail!("conv_transpose2d: output {h}x{wd} does not match input {hi}x{wi}");
        }
        check_bias(bias, o)?;
        if self.rows.as_ref().is_some_and(|r| r.len() != w.len()) {
            candle_core::bail!("conv_transpose2d: kernel rows of another kernel than {c}x{o}x{k}x{k}");
        }
        // A phase-wise transposed convolution makes exactly 2H x 2W.
        let phases = self.g.phases() && (h, wd) == (2 * hi, 2 * wi);
        if winograd_batch(n, c, o) && (self.g.winograd() || phases) {
            let batch = Batch { x, n, dims: (c, hi, wi), wt: w, o, bias };
            let y = if self.g.winograd() {
                winograd::conv3x3(&batch, Kernel::Transposed, &self.winograd)
            } else {
                winograd::conv_t4x4s2(&batch, &self.winograd)
            };
            return Ok((CpuStorage::F32(y), Shape::from((n, o, h, wd))));
        }
        if self.g.stride == 1 && self.g.pad < k && channels_last(n) && o >= CHANNELS_LAST_MIN_OUT {
            // The convolution by the flipped kernel, padded K - 1 - p: its
            // GEMM is K K C deep, where the patches added back (below)
            // have one C deep, a handful for the pixel-shuffle RGB layer's
            // input gradient (12 → 64 channels: 3.7 → 2.2 ms, batch 64).
            let wt = flipped_rows(w, (c, o, k));
            let g = Geom { k, stride: 1, pad: k - 1 - self.g.pad };
            let y = patch_rows(&Batch { x, n, dims: (c, hi, wi), wt: &wt, o, bias }, g);
            return Ok((CpuStorage::F32(y), Shape::from((n, o, h, wd))));
        }
        let (kk, hw, plane) = (k * k, hi * wi, h * wd);
        // Channels-last, the kernel as C x (kh, kw, o): the order of a patch row.
        let wt = (channels_last(n) && !planar_rgb(self.g, o)).then(|| transpose_blocks(w, (o, kk)));
        let padded = if wt.is_some() { self.g.padded_len((o, h, wd)) } else { 0 };
        let g = group_size(n, hw);
        // With fewer images than threads (the explorer's batch of one), each
        // image's output channels are split between the threads instead.
        let parts = if g == 1 { (rayon::current_num_threads() / n).clamp(1, o.max(1)) } else { 1 };
        let per_part = o.div_ceil(parts).max(1);
        // Each plane starts at its channel's bias (or 0); the columns add onto it.
        let mut y = par_chunked(n * o * plane, plane, |p, r| repeat_n(bias.map_or(0.0, |b| b[p % o]), r.len()));
        let jobs = y.par_chunks_mut(g * o * plane).enumerate().flat_map(|(j, out)| {
            let chunk = if parts > 1 { per_part * plane } else { out.len() };
            out.par_chunks_mut(chunk).enumerate().map(move |(q, part)| (j, q * per_part, part))
        });
        jobs.for_each(|(j, o0, out)| {
            let gi = if parts > 1 { 1 } else { out.len() / (o * plane) };
            // Output channels o0..o0 + oc (all of them when channels-last).
            let oc = out.len() / (gi * plane);
            let ld = gi * hw;
            // A group of one reads its input in place.
            with_scratch([oc * kk * ld, if gi > 1 { c * ld } else { 0 }, padded], |[cols, xg, yp]| {
                let xs = &x[j * g * c * hw..][..gi * c * hw];
                let b = if gi == 1 {
                    xs
                } else {
                    gather(xs, gi, c, hw, xg);
                    &*xg
                };
                let images = out.chunks_exact_mut(oc * plane).enumerate();
                if let Some(wt) = &wt {
                    // Patch rows: one per input pixel, (kh, kw, o) within.
                    matmul(ld, kk * o, c, cols, false, Operand::transposed(b, ld), Operand::plain(wt, kk * o));
                    for (t, img) in images {
                        yp.fill(0.0);
                        self.g.row2im(&cols[t * hw * kk * o..][..hw * kk * o], (o, h, wd), yp);
                        self.g.add_unpadded(yp, (o, h, wd), img);
                    }
                } else {
                    // Columns: rows o0*kk.. of W^T (O*K*K x C) times the input.
                    match self.panels.as_deref().filter(|p| p.serves(o0 * kk, ld)) {
                        Some(panels) => panels.product(o0 * kk, b, cols, false),
                        None => {
                            let wt = match &self.rows {
                                Some(rows) => Operand::plain(&rows[o0 * kk * c..], c),
                                None => Operand::transposed(&w[o0 * kk..], o * kk),
                            };
                            matmul(oc * kk, ld, c, cols, false, wt, Operand::plain(b, ld));
                        }
                    }
                    for (t, img) in images {
                        self.g.col2im(cols, ld, t * hw, (oc, h, wd), img);
                    }
                }
            });
        });
        Ok((CpuStorage::F32(y), Shape::from((n, o, h, wd))))
    }
}

impl CustomOp2 for ConvT {
    fn name(&self) -> &'static str {
        "ganscope-conv-transpose2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let _timer = super::profile::Timer::start(self.name(), &[l1, l2]);
        self.forward((s1, l1), (s2, l2), None)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = tracked(x, || dy.apply_op2(w, Conv(self.g, for_input_grad(&self.winograd), None, None)))?;
        let dw = tracked(w, || dy.apply_op2(x, WeightGrad(self.g)))?;
        Ok((dx, dw))
    }
}

/// A transposed convolution's kernel `w` (C, O, K, K) as the kernel of the
/// convolution it is at stride 1, each (c, o) kernel turned by 180
/// degrees, in [`patch_rows`]' order: O x (kh, kw, c).
fn flipped_rows(w: &[f32], (c, o, k): (usize, usize, usize)) -> Vec<f32> {
    let kk = k * k;
    let mut wt = vec![0f32; w.len()];
    for (oi, row) in wt.chunks_exact_mut(kk * c).enumerate() {
        for (tap, at) in row.chunks_exact_mut(c).enumerate() {
            at.iter_mut().enumerate().for_each(|(ci, v)| *v = w[(ci * o + oi) * kk + kk - 1 - tap]);
        }
    }
    wt
}

/// `weight_grad(a, b)`: a (N, A, H, W), b (N, B, Ho, Wo) -> (B, A, K, K).
struct WeightGrad(Geom);

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "ganscope-conv2d-weight-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let _timer = super::profile::Timer::start(self.name(), &[l1, l2]);
        let (a, b) = (slice(s1, l1, "weight grad input")?, slice(s2, l2, "weight grad output")?);
        let ((n, ca, h, w), (n2, cb, ho, wo)) = (dims4(l1)?, dims4(l2)?);
        let k = self.0.k;
        if n != n2 || self.0.conv_out(h) != ho || self.0.conv_out(w) != wo {
            candle_core::bail!("weight grad: shapes {:?} and {:?} do not match", l1.dims(), l2.dims());
        }
        if channels_last(n) && (self.0.phases() || self.0.winograd()) {
            let dims = (ca, h, w);
            let dw = if self.0.phases() {
                winograd::conv4x4s2_weight_grad(a, n, dims, b, cb)
            } else {
                winograd::conv3x3_weight_grad(a, n, dims, b, cb)
            };
            if let Some(dw) = dw {
                return Ok((CpuStorage::F32(dw), Shape::from((cb, ca, k, k))));
            }
        }
        let (kka, hw) = (k * k * ca, ho * wo);
        // D's first layer copies planar patches (see `PLANAR_BELOW`),
        // others channels-last ones.
        let planar = planar_rgb(self.0, ca);
        let g = group_size(n, hw);
        // The planar patches, KKA rows of a group's pixels, are transposed
        // into pixel rows of KKA values in the first buffer: the gemm crate
        // (0.19) runs a product whose right operand is stored by columns at
        // 34 GFLOP/s where by rows it runs at 100 (64 x 48 x 1024, one
        // thread, a scratch probe), and the patches are its smaller operand.
        let first = if planar { g * hw * kka } else { self.0.padded_len((ca, h, w)) };
        let threads = rayon::current_num_threads().max(1);
        // Whole groups per thread, each thread summing into its own partial.
        let per = n.div_ceil(threads).div_ceil(g) * g;
        let partials: Vec<Vec<f32>> = (0..n.div_ceil(per))
            .into_par_iter()
            .map(|t| {
                let mut acc = vec![0f32; cb * kka];
                let end = ((t + 1) * per).min(n);
                for i0 in (t * per..end).step_by(g) {
                    let gi = g.min(end - i0);
                    let ld = gi * hw;
                    with_scratch([first, ld * kka, if gi > 1 { cb * ld } else { 0 }], |[ap, rows, bg]| {
                        for u in 0..gi {
                            let img = &a[(i0 + u) * ca * h * w..][..ca * h * w];
                            if planar {
                                self.0.im2col(img, (ca, h, w), rows, ld, u * hw);
                            } else {
                                self.0.pad_hwc(img, (ca, h, w), ap);
                                self.0.im2row(ap, (ca, h, w), &mut rows[u * hw * kka..][..hw * kka]);
                            }
                        }
                        let bs = &b[i0 * cb * hw..][..gi * cb * hw];
                        let bm = if gi == 1 {
                            bs
                        } else {
                            gather(bs, gi, cb, hw, bg);
                            &*bg
                        };
                        let patches = if planar {
                            transpose(rows, ld, ap, kka, (kka, ld), Store::Set);
                            &*ap
                        } else {
                            &*rows
                        };
                        matmul(cb, kka, ld, &mut acc, true, Operand::plain(bm, ld), Operand::plain(patches, kka));
                    });
                }
                acc
            })
            .collect();
        // The first thread's partial takes the others' (in parallel chunks).
        let mut partials = partials.into_iter();
        let mut sum = partials.next().unwrap_or_else(|| vec![0f32; cb * kka]);
        for p in partials {
            let chunks = sum.par_chunks_mut(CHUNK).zip(p.par_chunks(CHUNK));
            chunks.for_each(|(d, p)| d.iter_mut().zip(p).for_each(|(d, v)| *d += v));
        }
        // From B x (kh, kw, a), the order of a patch row, to B x A x K x K.
        let dw = if planar { sum } else { transpose_blocks(&sum, (k * k, ca)) };
        Ok((CpuStorage::F32(dw), Shape::from((cb, ca, k, k))))
    }
}

/// 2D convolution of `x` (N, C, H, W) with `w` (O, C, K, K) plus bias `b`
/// (O), then `act`: one fast op on the CPU, GEMMs on CUDA, candle's
/// elsewhere (the activation an op of its own on both). `kept`, given only
/// for a kernel that never changes, keeps its Winograd transform
/// ([`KeptKernel`]).
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    stride: usize,
    pad: usize,
    act: Act,
    kept: Option<&KeptKernel>,
) -> Result<Tensor> {
    if fast_cuda(&[x, w, b]) {
        return act.apply(&on_cuda(x, w, b, (stride, pad), false)?);
    }
    if !fast(&[x, w, b]) {
        return act.apply(&x.conv2d(w, pad, stride, 1, 1)?.broadcast_add(&b.reshape((1, (), 1, 1))?)?);
    }
    let op = WithBias { conv: Conv::new(x.dims4()?, w, (stride, pad), kept)?, act };
    x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, op)
}

/// A convolution (`transposed` or not) on CUDA: one op (`gemm_conv.rs`)
/// where no second derivative is wanted, else candle ops ([`unfold`]).
fn on_cuda(x: &Tensor, w: &Tensor, b: &Tensor, (stride, pad): (usize, usize), transposed: bool) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if super::conv_bn::fusing() {
        return super::gemm_conv::layer(x, w, b, (stride, pad), transposed);
    }
    if transposed { unfold::conv_transpose2d(x, w, b, stride, pad) } else { unfold::conv2d(x, w, b, stride, pad) }
}

/// A layer of the ops with a BatchNorm: kernel, bias, (stride, padding),
/// whether it is a transposed convolution, and the kernel's kept forms.
#[derive(Clone, Copy)]
pub struct Layer<'a> {
    pub w: &'a Tensor,
    pub b: &'a Tensor,
    pub geom: (usize, usize),
    pub transposed: bool,
    pub kept: Option<&'a KeptKernel>,
}

impl Layer<'_> {
    /// The output's dims for an input of `dims` (N, C, H, W).
    fn out_dims(&self, (n, _, h, wd): (usize, usize, usize, usize)) -> Result<(usize, usize, usize, usize)> {
        let (o, k) = (self.w.dim(usize::from(self.transposed))?, self.w.dim(3)?);
        let g = Geom { k, stride: self.geom.0, pad: self.geom.1 };
        let out = |size| if self.transposed { g.conv_t_out(size) } else { g.conv_out(size) };
        Ok((n, o, out(h), out(wd)))
    }

    /// The convolution's op for an input of `dims`.
    fn conv(&self, dims: (usize, usize, usize, usize)) -> Result<Conv> {
        Conv::new(dims, self.w, self.geom, self.kept)
    }

    /// The transposed convolution's op for an input of `dims`.
    fn conv_t(&self, dims: (usize, usize, usize, usize)) -> Result<ConvT> {
        ConvT::new(dims, self.w, self.geom, self.kept)
    }
}

/// [`conv2d`] by `layer`, or [`conv_transpose2d`] when it is transposed,
/// into the training-mode BatchNorm `bn` and its LeakyReLU as one op
/// ([`conv_bn`]): the fast CPU path only, `None` elsewhere.
pub fn conv_batch_norm(x: &Tensor, layer: Layer, bn: &conv_bn::NormArgs) -> Result<Option<BatchNormTrain>> {
    if !conv_bn::applies(&[x, layer.w, layer.b, bn.gamma, bn.beta]) {
        return Ok(None);
    }
    let (dims, tensors) = (x.dims4()?, (layer.w, layer.b));
    if layer.transposed {
        conv_bn::apply(layer.conv_t(dims)?, x, tensors, bn)
    } else {
        conv_bn::apply(layer.conv(dims)?, x, tensors, bn)
    }
}

/// [`conv2d`] of `x` by `first` then `act`, then [`conv_batch_norm`] of
/// that by `second` (not transposed), as one op (see
/// `conv_bn::apply_after`): the fast CPU path only, None elsewhere.
pub fn conv2d_then_batch_norm(
    x: &Tensor,
    (first, act): (Layer, Act),
    second: Layer,
    bn: &conv_bn::NormArgs,
) -> Result<Option<BatchNormTrain>> {
    if first.transposed
        || second.transposed
        || !conv_bn::applies(&[x, first.w, first.b, second.w, second.b, bn.gamma, bn.beta])
    {
        return Ok(None);
    }
    let dims = x.dims4()?;
    let op = WithBias { conv: first.conv(dims)?, act };
    let tensors = ((first.w, first.b), (second.w, second.b));
    conv_bn::apply_after(op, second.conv(first.out_dims(dims)?)?, x, tensors, bn)
}

/// [`conv_batch_norm`] of `x` by `first`, then `second` and `act`, as one
/// op (see `conv_bn::apply_before`): the fast CPU path only, for two
/// convolutions or two transposed ones; None elsewhere. A second kernel
/// that covers its whole input runs as the matrix product it is.
pub fn batch_norm_then(
    x: &Tensor,
    first: Layer,
    bn: &conv_bn::NormArgs,
    (second, act): (Layer, Act),
) -> Result<Option<BatchNormTrain>> {
    if !conv_bn::applies(&[x, first.w, first.b, second.w, second.b, bn.gamma, bn.beta]) {
        return Ok(None);
    }
    let dims = x.dims4()?;
    let (n, o, h, wd) = first.out_dims(dims)?;
    let mid = if bn.shuffled { (n, o / 4, 2 * h, 2 * wd) } else { (n, o, h, wd) };
    let tensors = ((first.w, first.b), (second.w, second.b));
    match (first.transposed, second.transposed) {
        (false, false) if Dense::covers(mid, second.w.dims(), second.geom) => {
            let next = WithBias { conv: Dense { out: (second.w.dim(0)?, 1, 1) }, act };
            conv_bn::apply_before(first.conv(dims)?, next, x, tensors, bn)
        }
        (false, false) => {
            let next = WithBias { conv: second.conv(mid)?, act };
            conv_bn::apply_before(first.conv(dims)?, next, x, tensors, bn)
        }
        (true, true) => {
            let next = WithBias { conv: second.conv_t(mid)?, act };
            conv_bn::apply_before(first.conv_t(dims)?, next, x, tensors, bn)
        }
        _ => Ok(None),
    }
}

impl Conv {
    /// The op for an input of (N, C, H, W) and `w` (O, C, K, K) with
    /// (stride, padding), taking the kernel's derived forms from `kept`
    /// where given.
    fn new(
        (n, _, h, wd): (usize, usize, usize, usize),
        w: &Tensor,
        (stride, pad): (usize, usize),
        kept: Option<&KeptKernel>,
    ) -> Result<Self> {
        let (o, _, k, _) = w.dims4()?;
        let g = Geom { k, stride, pad };
        // A batch copies its patches channels-last, where no panels serve.
        let cols = if channels_last(n) { 0 } else { n * g.conv_out(h) * g.conv_out(wd) };
        let panels = KeptKernel::panels(kept, cols, o, || Ok(w.flatten_all()?.to_vec1::<f32>()?.into()))?;
        let single = KeptKernel::single(kept, g, n, (h, wd), w)?;
        Ok(Conv(g, KeptKernel::winograd(kept, n), panels, single))
    }
}

/// Transposed 2D convolution of `x` (N, C, H, W) with `w` (C, O, K, K) plus
/// bias `b` (O), output padding 0, then `act`, as [`conv2d`]. `kept`, given
/// only for a kernel that never changes, keeps the forms of it that the
/// CPU paths make ([`KeptKernel`]).
pub fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    stride: usize,
    pad: usize,
    act: Act,
    kept: Option<&KeptKernel>,
) -> Result<Tensor> {
    if fast_cuda(&[x, w, b]) {
        return act.apply(&on_cuda(x, w, b, (stride, pad), true)?);
    }
    if !fast(&[x, w, b]) {
        return act.apply(&x.conv_transpose2d(w, pad, 0, stride, 1)?.broadcast_add(&b.reshape((1, (), 1, 1))?)?);
    }
    let conv = ConvT::new(x.dims4()?, w, (stride, pad), kept)?;
    x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, WithBias { conv, act })
}

impl ConvT {
    /// The op for an input of (N, C, Hi, Wi) and `w` (C, O, K, K) with
    /// (stride, padding), taking the kernel's derived forms from `kept`
    /// where given.
    fn new(
        (n, _, hi, wi): (usize, usize, usize, usize),
        w: &Tensor,
        (stride, pad): (usize, usize),
        kept: Option<&KeptKernel>,
    ) -> Result<Self> {
        let k = w.dim(3)?;
        let g = Geom { k, stride, pad };
        // Only the planar path reads the rows, only batches the transform.
        let rows = kept.filter(|_| !channels_last(n)).map(|k| k.rows(w)).transpose()?;
        let panels = match &rows {
            Some(r) => KeptKernel::panels(kept, n * hi * wi, w.dim(1)? * k * k, || Ok(Arc::clone(r)))?,
            None => None,
        };
        let winograd = KeptKernel::winograd(kept, n);
        Ok(ConvT { g, out_h: g.conv_t_out(hi), out_w: g.conv_t_out(wi), rows, panels, winograd })
    }
}
