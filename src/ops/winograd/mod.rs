//! Batched convolutions by Winograd's minimal filtering (Lavin & Gray
//! 2016): 3x3 stride-1 ones (padding 1) by F(2x2, 3x3) here, the 4x4
//! stride-2 ones and their transposes by F(2x2, 2x2) in [`strided`].
//! Forward passes and input gradients (each the other kind of convolution)
//! run this way, and so do the weight gradients of layers wide enough
//! ([`MIN_MACS_PER_VALUE`]): the algorithm differentiated, `Gᵀ [Σ_tiles
//! (A dy Aᵀ) ⊙ (Bᵀ d B)] G`, summed over a whole group of images per GEMM
//! ([`weight_grad`]).
//!
//! Why: the pixel-shuffle generator's layers, their input gradients and the
//! average-pooling discriminator's layers are 3x3 stride-1 convolutions.
//! As patch copies plus a GEMM they cost 9 multiply-adds per output pixel,
//! input and output channel; here each 2x2 output tile takes 16, 2.25x
//! fewer. Each tile of the zero-padded input (4x4 pixels, 2 apart) becomes
//! `Bᵀ d B`, each (c, o) kernel `G g Gᵀ`; the 16 positions of those 4x4
//! transforms are 16 GEMMs (tiles x C) * (C x O), and `Aᵀ m A` turns each
//! tile's 16 products back into its 2x2 outputs. The transforms are sums
//! over channels-last vectors of channels. F(2x2, 3x3)'s transforms only
//! add, subtract and halve, so f32 results stay within a few ulps of the
//! direct sums (the equivalence tests hold them to the same 1e-4).
//!
//! A batch of one keeps the planar path: transforming the kernel (16 values
//! per (c, o) pair) costs about what Winograd saves on one image. A
//! constant kernel, transformed once, is the exception: one image then
//! runs by [`single`], its tiles as GEMM columns.
//!
//! Larger tiles, F(4x4, 3x3) and F(4x4, 2x2) (1.78x and 1.44x fewer
//! products again), first made training 25-30% slower (BENCHMARKS.md,
//! 2026-11): each call transformed its kernel afresh (36 or 100 values
//! per (c, o) pair) and the gemm crate packed it again, and the 6x6 and
//! 5x5 transforms spilled out of registers. With kernels transformed once
//! per step and packed once, and transforms as maps on vectors,
//! F(4x4, 3x3) now shortens a 32 px pixel-shuffle step by ~7% on one
//! thread (BENCHMARKS.md, 2026-12-04, night). F(4x4, 2x2) still made the
//! stride-2 layers 30-80% slower then: its 5x5 transforms, 4x fewer rows
//! per GEMM, and (as written then) a transform of its own for each
//! transposed view. Only their kernel gradients use it, for wide layers
//! whose images have 8x8 outputs or more: their GEMMs sum over all tiles,
//! so tile size does not shorten them ([`strided`]).

use std::array;
use std::mem::MaybeUninit;
use std::ops::{Add, Range, Sub};
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;
use wide::f32x8;

use super::conv::{Dims, Operand, group_size, matmul, with_scratch, with_shared, with_spare};
use super::packed::{ALIASED, Packed};
use super::transpose::{Slot, Store, transpose};
use super::{par_written, zeroed};

mod large;
mod recent;
mod single;
mod strided;
mod taps;

pub use recent::RecentTransforms;
pub(in crate::ops) use single::Single;
pub(super) use strided::{conv_t4x4s2, conv4x4s2, conv4x4s2_weight_grad};
use taps::sandwich_rows;

/// How a 3x3 kernel is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kernel {
    /// A convolution's, (O, C, 3, 3).
    Conv,
    /// A transposed convolution's, (C, O, 3, 3): at stride 1 and padding
    /// 1 that is the convolution with each (c, o) kernel flipped.
    Transposed,
}

/// G of F(2x2, 3x3) times a column of 3 taps: G = [1 0 0; ½ ½ ½; ½ -½ ½;
/// 0 0 1].
#[inline(always)]
fn g_rows([a, b, c]: [f32x8; 3]) -> [f32x8; 4] {
    let half = f32x8::splat(0.5);
    [a, (a + b + c) * half, (a - b + c) * half, c]
}

/// Gᵀ times a column of 4 values: a transform's gradient back to taps.
#[inline(always)]
fn g_t_rows([p, q, r, s]: [f32x8; 4]) -> [f32x8; 3] {
    let half = f32x8::splat(0.5);
    [p + (q + r) * half, (q - r) * half, (q + r) * half + s]
}

/// Where each of G's rows goes when the kernel is reversed: the first and
/// last trade places ([`Transformed::transposed`]).
const FLIP_3: [usize; 4] = [3, 1, 2, 0];

/// A 3x3 kernel's 9 taps (row by row) to its 16 positions, `G g Gᵀ`.
struct Positions;

impl Lanes<9, 16> for Positions {
    #[inline(always)]
    fn apply(&self, t: [f32x8; 9]) -> [f32x8; 16] {
        sandwich_rows(g_rows, t)
    }
}

/// [`Positions`] of the kernel read in reverse, as a transposed
/// convolution's (C, O) kernel is the convolution's with each (c, o)
/// kernel flipped.
struct FlippedPositions;

impl Lanes<9, 16> for FlippedPositions {
    #[inline(always)]
    fn apply(&self, mut taps: [f32x8; 9]) -> [f32x8; 16] {
        taps.reverse();
        Positions.apply(taps)
    }
}

/// A transform's gradient at its 16 positions back to the kernel's 9
/// taps, `Gᵀ du G`: the transpose of [`Positions`].
struct Taps;

impl Lanes<16, 9> for Taps {
    #[inline(always)]
    fn apply(&self, d: [f32x8; 16]) -> [f32x8; 9] {
        sandwich_rows(g_t_rows, d)
    }
}

/// Row i of Bᵀ is `e_x + s e_y` for (x, y, s) = `B_ROWS[i]`: Bᵀ = [1 0 -1
/// 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
const B_ROWS: [(usize, usize, f32); 4] = [(0, 2, -1.0), (1, 2, 1.0), (2, 1, -1.0), (1, 3, -1.0)];

/// `dst = a + s * b`, value by value (s is ±1, so exact).
fn add_signed(dst: &mut [f32], a: &[f32], b: &[f32], s: f32) {
    dst.iter_mut().zip(a).zip(b).for_each(|((d, a), b)| *d = a + s * b);
}

/// Aᵀ times a column of 4 products (numbers or vectors): back to 2 outputs.
#[inline(always)]
fn output_rows<T: Copy + Add<Output = T> + Sub<Output = T>>([a, b, c, d]: [T; 4]) -> [T; 2] {
    [a + b + c, b - c - d]
}

/// A map of S vectors to R, lane by lane: what [`apply_across`] applies.
/// Closures are such maps, and so are the kernel transforms' unit structs.
///
/// Why structs for those: their bodies are large, and passed as function
/// items they were not inlined into [`apply_across`]'s loop (the item's
/// `Fn::call` took a call per 8 values, its arrays through memory, and
/// the maps ran slower than the sparse sums they replaced); a method
/// marked `#[inline(always)]` is inlined.
pub(super) trait Lanes<const S: usize, const R: usize> {
    fn apply(&self, x: [f32x8; S]) -> [f32x8; R];
}

impl<const S: usize, const R: usize, F: Fn([f32x8; S]) -> [f32x8; R]> Lanes<S, R> for F {
    #[inline(always)]
    fn apply(&self, x: [f32x8; S]) -> [f32x8; R] {
        self(x)
    }
}

/// `dst[r][q] = l(src[..][q])[r] (+ bias[q])` for each value q of the
/// vectors: `l` (a column's product with L, R x S) applied across S
/// vectors, eight values at a time, into values or uninitialized slots.
///
/// Why explicit vectors: as a loop over values indexing S + R slices, it
/// vectorized only where LLVM could check at run time that the slices do
/// not overlap, which it gives up on past a few: the stride-2 input
/// transforms' 9 into 9 ran scalar, with bounds checks (7% of a one-thread
/// 32 px pixel-shuffle step in `perf`), and the 3x3 kernel gradients' 4
/// into 16 took 2-3x as long as now.
#[inline(always)]
fn apply_across<const S: usize, const R: usize, T: Slot>(
    src: [&[f32]; S],
    dst: [&mut [T]; R],
    bias: Option<&[f32]>,
    l: &impl Lanes<S, R>,
) {
    let n = dst[0].len();
    let whole = n - n % 8;
    // Sliced to one length, so that the loop needs no bounds checks.
    let src = src.map(|v| &v[..n]);
    let mut dst = dst.map(|v| &mut v[..n]);
    let bias = bias.map(|b| &b[..n]);
    for q in (0..n / 8).map(|c| 8 * c) {
        let eight = |v: &[f32]| f32x8::new(v[q..q + 8].try_into().expect("8 values"));
        let ys = l.apply(array::from_fn(|i| eight(src[i])));
        let b = bias.map(eight);
        for (d, y) in dst.iter_mut().zip(ys) {
            d[q..q + 8].iter_mut().zip(b.map_or(y, |b| y + b).to_array()).for_each(|(d, y)| d.set(y));
        }
    }
    // The last n % 8 values, padded with zeros.
    if whole < n {
        let padded = |v: &[f32]| {
            let mut eight = [0f32; 8];
            eight[..n - whole].copy_from_slice(&v[whole..n]);
            f32x8::new(eight)
        };
        let ys = l.apply(array::from_fn(|i| padded(src[i])));
        let b = bias.map(padded);
        for (d, y) in dst.iter_mut().zip(ys) {
            d[whole..].iter_mut().zip(b.map_or(y, |b| y + b).to_array()).for_each(|(d, y)| d.set(y));
        }
    }
}

/// Writes `x` (C x H x W) channels-last into `xp`, whose rows are `cols`
/// pixels: `x` at row and column 1, zeros around it.
fn pad(x: &[f32], (c, h, w): Dims, xp: &mut [f32], cols: usize) {
    for (r, row) in xp.chunks_exact_mut(cols * c).enumerate() {
        if r == 0 || r > h {
            row.fill(0.0);
            continue;
        }
        row[..c].fill(0.0);
        row[(w + 1) * c..].fill(0.0);
        transpose(&x[(r - 1) * w..], h * w, &mut row[c..], c, (c, w), Store::Set);
    }
}

/// How an image of H x W pixels divides into M x M output tiles (M is 2,
/// or 4 for [`large`]).
#[derive(Debug, Clone, Copy)]
struct Tiles {
    h: usize,
    w: usize,
    m: usize,
    th: usize,
    tw: usize,
}

impl Tiles {
    /// 2x2 tiles.
    fn new(h: usize, w: usize) -> Self {
        Self::of(h, w, 2)
    }

    fn of(h: usize, w: usize, m: usize) -> Self {
        Self { h, w, m, th: h.div_ceil(m), tw: w.div_ceil(m) }
    }

    fn count(&self) -> usize {
        self.th * self.tw
    }

    /// The length of an image of `c` channels once [`Self::pad`]ded.
    fn padded_len(&self, c: usize) -> usize {
        (self.m * self.th + 2) * (self.m * self.tw + 2) * c
    }

    /// Writes `x` (C x H x W) channels-last into `xp`, (M th + 2) x (M tw +
    /// 2) x C: a zero border of one pixel, and more at the bottom and right
    /// where M does not divide H or W, so that every tile is whole.
    fn pad(&self, x: &[f32], c: usize, xp: &mut [f32]) {
        pad(x, (c, self.h, self.w), &mut xp[..self.padded_len(c)], self.m * self.tw + 2);
    }

    /// `Bᵀ d B` of each 4x4 tile of `x` (C x H x W), 2x2 tiles only, into
    /// `v` as tiles x 16 x C, tile after tile `ts` (16 C or more) values
    /// apart; `xp` holds the padded image, `bd` (16 x C) `Bᵀ d`. Whole
    /// channel vectors at a time, which vectorize (a channel at a time, the
    /// transform took a quarter of a layer's time).
    fn transform_input(&self, x: &[f32], c: usize, xp: &mut [f32], bd: &mut [f32], v: &mut [f32], ts: usize) {
        assert_eq!(self.m, 2, "winograd: F(2x2, 3x3) input transform of {}x{} tiles", self.m, self.m);
        self.pad(x, c, xp);
        let line = (2 * self.tw + 2) * c;
        for (t, out) in v.chunks_exact_mut(ts).take(self.count()).enumerate() {
            let at = 2 * (t / self.tw) * line + 2 * (t % self.tw) * c;
            let d = |i: usize, j: usize| &xp[at + i * line + j * c..][..c];
            for (i, &(a, b, s)) in B_ROWS.iter().enumerate() {
                for j in 0..4 {
                    add_signed(&mut bd[(4 * i + j) * c..][..c], d(a, j), d(b, j), s);
                }
            }
            for i in 0..4 {
                let row = &bd[4 * i * c..][..4 * c];
                for (k, &(a, b, s)) in B_ROWS.iter().enumerate() {
                    add_signed(&mut out[(4 * i + k) * c..][..c], &row[a * c..][..c], &row[b * c..][..c], s);
                }
            }
        }
    }

    /// Where tile `t`'s output (a, b) lies in the image, if inside it.
    fn place(&self, t: usize, a: usize, b: usize) -> Option<usize> {
        let (y, x) = (self.m * (t / self.tw) + a, self.m * (t % self.tw) + b);
        (y < self.h && x < self.w).then_some(y * self.w + x)
    }
}

/// `Aᵀ m A` plus bias for `count` tiles of `m` (S x S positions of `rows`
/// tiles x O) from tile `first` on, where `a_rows.0` multiplies a column
/// of the tile's positions by Aᵀ (M x S) and `a_rows.1` a row by it (the
/// same map but where a transposed stride-2 phase's products carry a
/// sign, [`strided`]); output (a, b) of tile `t` goes to pixel `place(t,
/// a, b)` of `px` (pixels x O) when there is one. `tile` ((M M + M S) x
/// O, at most [`TILE_SPARE`] x O) holds a tile's outputs and `Aᵀ m`.
fn transform_output<const S: usize, const M: usize>(
    m: &[f32],
    (rows, first, count): (usize, usize, usize),
    (o, bias): (usize, Option<&[f32]>),
    a_rows: (impl Fn([f32x8; S]) -> [f32x8; M], impl Fn([f32x8; S]) -> [f32x8; M]),
    place: impl Fn(usize, usize, usize) -> Option<usize>,
    tile: &mut [f32],
    px: &mut [f32],
) {
    let (out, am) = tile.split_at_mut(M * M * o);
    let am = &mut am[..M * S * o];
    for t in 0..count {
        let s = |i: usize, j: usize| &m[((i * S + j) * rows + first + t) * o..][..o];
        // am[r][j] = row r of Aᵀ m, at column j: (r S + j) O.
        for j in 0..S {
            let mut dst = am.chunks_exact_mut(o).skip(j).step_by(S);
            apply_across(array::from_fn(|i| s(i, j)), array::from_fn(|_| dst.next().expect("M rows")), None, &a_rows.0);
        }
        for (r, y) in out.chunks_exact_mut(M * o).enumerate() {
            let mut dst = y.chunks_exact_mut(o);
            let src = array::from_fn(|j| &am[(r * S + j) * o..][..o]);
            apply_across(src, array::from_fn(|_| dst.next().expect("M outputs")), bias, &a_rows.1);
        }
        for (e, out) in out.chunks_exact(o).enumerate() {
            if let Some(at) = place(t, e / M, e % M) {
                px[at * o..][..o].copy_from_slice(out);
            }
        }
    }
}

/// Rows of O values [`Planes::fill`] lends a tile: F(4x4, 3x3)'s 16
/// outputs and its 4 x 6 `Aᵀ m`, the most of any [`transform_output`].
const TILE_SPARE: usize = 40;

/// A group's output, O planes of `plane` pixels per image, not written
/// yet: [`Planes::fill`] and [`Planes::set_from`] write every value, and
/// a [`Filled`] is what [`Batch::by_groups`] asks of each group before it
/// takes the output as initialized.
///
/// Why not zero it first: the transpose into the planes sets every value,
/// and the zeroing was a pass of its own over each Winograd convolution's
/// output (`memset` fell from 3.3% to 2.8% of a one-thread 32 px step
/// without it).
pub(in crate::ops) struct Planes<'a>(&'a mut [MaybeUninit<f32>]);

/// Proof that a group's [`Planes`] were written; only [`Planes::fill`],
/// [`Planes::set_from`] and [`Planes::zeroed`] make one, from the planes
/// they consume.
pub(in crate::ops) struct Filled(());

impl<'a> Planes<'a> {
    /// The planes zeroed, for a body that writes them by other means.
    pub(in crate::ops) fn zeroed(self) -> (&'a mut [f32], Filled) {
        (zeroed(self.0), Filled(()))
    }

    /// Each plane (`plane` values) set to its channel's value in `values`
    /// (one per channel), for a body that adds the rest: [`Self::zeroed`]
    /// without a pass of zeros first.
    pub(in crate::ops) fn starting_at(self, values: &[f32], plane: usize) -> (&'a mut [f32], Filled) {
        assert!(
            plane > 0 && self.0.len().is_multiple_of(plane),
            "planes: {} values are not whole planes",
            self.0.len()
        );
        for (p, slots) in self.0.chunks_exact_mut(plane).enumerate() {
            slots.fill(MaybeUninit::new(values[p % values.len()]));
        }
        // SAFETY: every slot was just written (whole planes, asserted); a
        // `MaybeUninit<f32>` has the layout of an `f32`.
        (unsafe { &mut *(self.0 as *mut [MaybeUninit<f32>] as *mut [f32]) }, Filled(()))
    }

    /// Sets each image from `px`, the group's images one after another,
    /// each channels-last (`plane` x O).
    pub(in crate::ops) fn set_from(self, px: &[f32], (o, plane): (usize, usize)) -> Filled {
        let image = o * plane;
        assert!(
            image > 0 && self.0.len().is_multiple_of(image) && px.len() >= self.0.len(),
            "planes: {} values are not whole images of {image}, or more than the {} given",
            self.0.len(),
            px.len()
        );
        for (img, px) in self.0.chunks_exact_mut(image).zip(px.chunks_exact(image)) {
            transpose(px, o, img, plane, (plane, o), Store::Set);
        }
        Filled(())
    }

    /// Fills each image: `fill(i, tile, px)` writes image `i` channels-last
    /// into `px` (`plane` x O), with `tile` ([`TILE_SPARE`] x O) to spare,
    /// and the pixels then go into the planes.
    fn fill(self, (o, plane): (usize, usize), fill: impl Fn(usize, &mut [f32], &mut [f32])) -> Filled {
        let image = o * plane;
        assert!(
            image > 0 && self.0.len().is_multiple_of(image),
            "winograd: {} values are not whole images",
            self.0.len()
        );
        with_spare(image + TILE_SPARE * o, |buf| {
            let (px, tile) = buf.split_at_mut(image);
            for (i, img) in self.0.chunks_exact_mut(image).enumerate() {
                fill(i, tile, px);
                transpose(px, o, img, plane, (plane, o), Store::Set);
            }
        });
        Filled(())
    }
}

/// A batched convolution's arguments: `x`, `n` images of `dims` (C, H,
/// W), and its kernel `wt` into `o` channels, plus `bias`.
pub(in crate::ops) struct Batch<'a> {
    pub(in crate::ops) x: &'a [f32],
    pub(in crate::ops) n: usize,
    pub(in crate::ops) dims: Dims,
    pub(in crate::ops) wt: &'a [f32],
    pub(in crate::ops) o: usize,
    pub(in crate::ops) bias: Option<&'a [f32]>,
}

impl Batch<'_> {
    /// The output, `plane` pixels per channel, made group by group of
    /// images (`count` tiles, or GEMM columns, each) in parallel:
    /// `body(images, out, tiles, scratch)` gets the group's input and
    /// output and this thread's scratch buffers, `lens(tiles)` long, and
    /// fills the output.
    pub(in crate::ops) fn by_groups(
        &self,
        (count, plane): (usize, usize),
        lens: impl Fn(usize) -> [usize; 3] + Sync,
        body: impl Fn(&[f32], Planes, usize, [&mut [f32]; 3]) -> Filled + Sync,
    ) -> Vec<f32> {
        let (c, h, w) = self.dims;
        let g = group_size(self.n, count);
        // A group per job: `group_size` already shares the images out between the threads.
        // SAFETY: each group's `body` returns a `Filled`, which only
        // `Planes::fill`, `Planes::set_from` and `Planes::zeroed` make, by
        // consuming the group's `Planes` (a body gets no other) after
        // writing every value.
        unsafe {
            par_written(self.n * self.o * plane, (g * self.o * plane, 1), |j, out| {
                let gi = out.len() / (self.o * plane);
                let images = &self.x[j * g * c * h * w..][..gi * c * h * w];
                let Filled(()) = with_scratch(lens(gi * count), |bufs| body(images, Planes(out), gi * count, bufs));
            })
        }
    }
}

/// The 3x3 stride-1 convolution of a batch, its kernel stored as `kernel`
/// says, by F(4x4, 3x3) where [`large::pays`] and F(2x2, 3x3) elsewhere;
/// `kept` holds the kernel's transform once made (and if it holds one
/// already, its algorithm is the call's).
pub(super) fn conv3x3(batch: &Batch, kernel: Kernel, kept: &OnceLock<Transformed>) -> Vec<f32> {
    let ((c, h, w), o, wt) = (batch.dims, batch.o, batch.wt);
    let large = kept.get().map_or_else(|| large::pays(h, w), |u| u.positions() == 36);
    if large {
        // A transposed convolution by its kernel's own transform, mirrored.
        let u = Transformed::kept_or_new(kept, wt, kernel, (c, o), &large::Positions, Flip::Axes(&large::SAME));
        let tiles = Tiles::of(h, w, 4);
        let mirror = kernel == Kernel::Transposed;
        let input = |img: &[f32], xp: &mut [f32], bd: &mut [f32], v: &mut [f32], ts| {
            large::transform_input(&tiles, (img, c), (xp, bd), (v, ts), mirror);
        };
        return if mirror {
            conv3x3_by::<6, 4, 36>(batch, u, tiles, input, large::mirrored)
        } else {
            conv3x3_by::<6, 4, 36>(batch, u, tiles, input, large::output_rows)
        };
    }
    let flip = Flip::Axes(&FLIP_3);
    let u = match kernel {
        Kernel::Conv => Transformed::kept_or_new(kept, wt, kernel, (c, o), &Positions, flip),
        Kernel::Transposed => Transformed::kept_or_new(kept, wt, kernel, (c, o), &FlippedPositions, flip),
    };
    let tiles = Tiles::new(h, w);
    let input = |img: &[f32], xp: &mut [f32], bd: &mut [f32], v: &mut [f32], ts| {
        tiles.transform_input(img, c, xp, bd, v, ts);
    };
    conv3x3_by::<4, 2, 16>(batch, u, tiles, input, output_rows)
}

/// [`conv3x3`] by the transform `u`, of P = S x S positions, over M x M
/// `tiles`: `input(image, xp, bd, v, ts)` writes an image's tiles' `Bᵀ d
/// B` into `v`, tile after tile `ts` apart (`xp` for the padded image,
/// `bd` P x C for `Bᵀ d`), and `a_rows` multiplies a column by Aᵀ.
fn conv3x3_by<const S: usize, const M: usize, const P: usize>(
    batch: &Batch,
    u: &Transformed,
    tiles: Tiles,
    input: impl Fn(&[f32], &mut [f32], &mut [f32], &mut [f32], usize) + Sync,
    a_rows: impl Fn([f32x8; S]) -> [f32x8; M] + Copy + Sync,
) -> Vec<f32> {
    let ((c, h, w), o) = (batch.dims, batch.o);
    u.packed(); // here, by both threads, before the groups need it
    let (count, plane) = (tiles.count(), h * w);
    let vs = unaliased(P * c);
    let lens = |t| [tiles.padded_len(c) + P * c, t * vs, P * t * o];
    batch.by_groups((count, plane), lens, |images, out, t, [xp, v, m]| {
        let (xp, bd) = xp.split_at_mut(tiles.padded_len(c));
        for (img, v) in images.chunks_exact(c * plane).zip(v.chunks_exact_mut(count * vs)) {
            input(img, xp, bd, v, vs);
        }
        // Position p: (tiles x C), rows `vs` apart, times (C x O).
        for (p, m) in m.chunks_exact_mut(t * o).enumerate() {
            u.product(p..p + 1, &v[p * c..], vs, m, false);
        }
        let place = |t, a, b| tiles.place(t, a, b);
        out.fill((o, plane), |i, tile, px| {
            transform_output::<S, M>(m, (t, i * count, count), (o, batch.bias), (a_rows, a_rows), place, tile, px);
        })
    })
}

/// [`Single`] for a 3x3 convolution's kernel `wt` (O, C, 3, 3) over
/// tiles of `side` x `side` outputs ([`Single::side`]), from its
/// transform in `cell` (made there unless a batch's call made it, or made
/// apart where the cell's is of the other tile size); None where
/// `narrow`'s kernel does not run.
pub(in crate::ops) fn single(
    cell: &OnceLock<Transformed>,
    wt: &[f32],
    (c, o): (usize, usize),
    side: usize,
) -> Option<Single> {
    let (kernel, positions) = (Kernel::Conv, if side == 4 { 36 } else { 16 });
    let made = |cell: &OnceLock<Transformed>| match side {
        4 => Transformed::kept_or_new(cell, wt, kernel, (c, o), &large::Positions, Flip::Axes(&large::SAME)).clone(),
        _ => Transformed::kept_or_new(cell, wt, kernel, (c, o), &Positions, Flip::Axes(&FLIP_3)).clone(),
    };
    match cell.get() {
        Some(u) if u.positions() != positions => Single::new(&made(&OnceLock::new())),
        _ => Single::new(&made(cell)),
    }
}

/// How flipping a kernel moves its transform's positions
/// ([`Transformed::transposed`]).
#[derive(Debug, Clone, Copy)]
enum Flip {
    /// Each axis's positions as the permutation says (a 3x3 kernel's:
    /// G's rows for reversed taps are G's rows reordered).
    Axes(&'static [usize]),
    /// All positions in reverse order (the stride-2 phases').
    Reversed,
}

/// Each (c, o) kernel's transform, `G g Gᵀ` at each position: a map of
/// each pair's taps to its positions applied to the kernel read as taps x
/// (outer times inner), where (outer, inner) is (O, C) or (C, O) as the
/// kernel is stored, by [`taps`] over blocks of pairs. Position after
/// position, each [`Self::stride`] values from the last.
#[derive(Clone)]
pub(in crate::ops) struct Transformed {
    u: Arc<[f32]>,
    kernel: Kernel,
    c: usize,
    o: usize,
    /// How the positions move when the kernel is flipped.
    flip: Flip,
    /// Read as the transform of the flipped kernel (see [`Self::transposed`]).
    flipped: bool,
    /// The positions in panels for [`Self::product`], made at its first use.
    packed: Arc<OnceLock<Option<Packed>>>,
}

impl Transformed {
    fn new<const T: usize, const P: usize>(
        wt: &[f32],
        kernel: Kernel,
        (c, o): (usize, usize),
        map: &(impl Lanes<T, P> + Sync),
        flip: Flip,
    ) -> Self {
        let mut u = Arc::new_uninit_slice(P * unaliased(c * o));
        taps::to_positions(map, wt, Arc::get_mut(&mut u).expect("a new Arc is unique"));
        // SAFETY: `to_positions` set every value, the padding included.
        let u = unsafe { u.assume_init() };
        Self { u, kernel, c, o, flip, flipped: false, packed: Arc::default() }
    }

    /// The same weights' transform for the other kind of convolution: a
    /// convolution's input gradient is the transposed convolution by its
    /// kernel, and vice versa, so a layer's backward reads the transform
    /// its forward made instead of making its own. The values stay where
    /// they are, in the same (outer, inner) order; only the positions
    /// move, as flipping the kernel moves them:
    ///
    /// - F(2x2, 3x3): G applied to a reversed 3-tap kernel is G with its
    ///   first and last rows swapped, so positions 0 and 3 trade places
    ///   along each axis.
    /// - F(4x4, 3x3): nothing moves; the transposed view mirrors its tiles
    ///   instead ([`large`]).
    /// - F(2x2, 2x2) phase by phase: a transposed convolution's phase (p,
    ///   q) is the convolution's phase (1 - p, 1 - q) with its 2x2
    ///   sub-kernel reversed, and G2 applied to a reversed kernel is G2
    ///   upside down, so position (i, j) of phase (p, q), the e-th of 36
    ///   with e = 4 (3i + j) + 2p + q, reads position (2 - i, 2 - j) of
    ///   phase (1 - p, 1 - q), the (35 - e)-th.
    pub(in crate::ops) fn transposed(&self) -> Self {
        let kernel = match self.kernel {
            Kernel::Conv => Kernel::Transposed,
            Kernel::Transposed => Kernel::Conv,
        };
        let packed = Arc::clone(&self.packed);
        Self { u: Arc::clone(&self.u), kernel, c: self.o, o: self.c, flip: self.flip, flipped: !self.flipped, packed }
    }

    /// The transform in `cell`, put there unless an earlier call did (a
    /// constant kernel's, or the forward's for its input gradient): of
    /// `wt`, a `kernel` from `c` to `o` channels, by `map` ([`Self::new`]),
    /// or the same one [`recent`] kept.
    fn kept_or_new<'a, const T: usize, const P: usize>(
        cell: &'a OnceLock<Self>,
        wt: &[f32],
        kernel: Kernel,
        (c, o): (usize, usize),
        map: &(impl Lanes<T, P> + Sync),
        flip: Flip,
    ) -> &'a Self {
        assert!(
            wt.len() == T * c * o,
            "winograd: {} weights for a kernel of {T} taps from {c} to {o} channels",
            wt.len()
        );
        let u =
            cell.get_or_init(|| recent::transform(wt, kernel, (c, o, P), || Self::new(wt, kernel, (c, o), map, flip)));
        assert!(
            (u.kernel, u.c, u.o, u.u.len()) == (kernel, c, o, P * u.stride()),
            "winograd: a kept transform of another kernel"
        );
        u
    }

    /// How far apart the positions lie: a cache line more than their C x O
    /// values where those are a multiple of 4 KiB ([`unaliased`]).
    ///
    /// Why: [`taps::to_positions`] writes every position's row of a block
    /// of pairs side by side, and rows 4 KiB apart share their L1 sets. A
    /// probe on one thread: 131072 pairs to 16 positions 1.15 ms, 131064
    /// 0.74; 32768 pairs to 36 positions 0.68 ms, 32760 0.43.
    fn stride(&self) -> usize {
        unaliased(self.c * self.o)
    }

    /// How many positions the transform has (16, or 36 for the stride-2 phases).
    fn positions(&self) -> usize {
        self.u.len() / self.stride().max(1)
    }

    /// Where position `p`'s (C x O) matrix starts in `u`.
    fn stored(&self, p: usize) -> usize {
        let positions = self.positions();
        let p = match (self.flipped, self.flip) {
            (false, _) => p,
            (true, Flip::Axes(axis)) => axis.len() * axis[p / axis.len()] + axis[p % axis.len()],
            (true, Flip::Reversed) => positions - 1 - p,
        };
        p * self.stride()
    }

    /// Position `p`'s (C x O) matrix as a GEMM operand.
    fn position(&self, p: usize) -> Operand<'_> {
        let data = &self.u[self.stored(p)..][..self.c * self.o];
        match self.kernel {
            Kernel::Conv => Operand::transposed(data, self.c),
            Kernel::Transposed => Operand::plain(data, self.o),
        }
    }

    /// The positions in panels, packed at the first call, where the
    /// transform is read as a convolution's: a convolution kernel's own,
    /// or a transposed convolution's flipped (both views share the panels;
    /// only this one makes them). None otherwise, and where [`Packed`] does
    /// not serve. Batches ask before their groups start, so that the
    /// threads pack together.
    ///
    /// Why not the other view: packed alike, its products (the input
    /// gradients of 3x3 and stride-2 layers, N = 64-256) ran 5-18% slower
    /// than by the gemm crate inside training steps, and 1-5% slower still
    /// with the next rows prefetched, where this view's ran 6-43% faster
    /// (BENCHMARKS.md, 2026-12-03).
    fn packed(&self) -> Option<&Packed> {
        if self.kernel != Kernel::Conv {
            return None;
        }
        let pair = self.c * self.o;
        let packed = self
            .packed
            .get_or_init(|| Packed::new(self.positions(), (self.c, self.o), |p| &self.u[self.stored(p)..][..pair]));
        packed.as_ref()
    }

    /// `y` (rows x O) = the rows of `a` (`lda` apart) times positions
    /// `ps` read as one matrix (their C x `ps.len()` values end to end),
    /// added to what `y` holds when `add`.
    fn product(&self, ps: Range<usize>, a: &[f32], lda: usize, y: &mut [f32], add: bool) {
        if let Some(packed) = self.packed() {
            return packed.product(ps, a, lda, y, add);
        }
        let rows = y.len() / self.o.max(1);
        for (i, p) in ps.enumerate() {
            let a = Operand::plain(&a[i * self.c..], lda);
            matmul(rows, self.o, self.c, y, add || i > 0, a, self.position(p));
        }
    }

    /// The bytes the transform and its panels take.
    fn bytes(&self) -> usize {
        self.u.len() * size_of::<f32>() + self.packed.get().and_then(Option::as_ref).map_or(0, Packed::bytes)
    }
}

/// The kernel gradient (O, C, 3, 3) of a batch's 3x3 stride-1 convolution
/// (padding 1) from its input `x` (N, C, H, W) and output gradient `dy`
/// (N, O, H, W), by [`weight_grad`] with F(4x4, 3x3) where
/// [`large::pays`] and an image has more than one tile (4x fewer
/// multiply-adds than the patch GEMM), else F(2x2, 3x3) (2.25x fewer);
/// None for narrow layers. A transposed convolution's kernel gradient is
/// this with the roles of its input and output gradient swapped.
///
/// Why not one tile per image: the GEMMs, which sum over tiles, are then
/// only the batch deep, and the 36 accumulators per pair cost more than
/// the products saved (G's 256 → 512 layer at 4x4: 14.1-14.5 ms a step by
/// F(2x2, 3x3), 15.5-15.7 by F(4x4, 3x3); BENCHMARKS.md).
pub(super) fn conv3x3_weight_grad(x: &[f32], n: usize, (c, h, w): Dims, dy: &[f32], o: usize) -> Option<Vec<f32>> {
    if large::pays(h, w) && h * w > 16 {
        let tiles = Tiles::of(h, w, 4);
        let layer = Layer { x, n, dims: (c, h, w), dy, o, plane: h * w, count: tiles.count(), side: 4 };
        let input = |img: &[f32], v: &mut [f32]| {
            with_scratch([tiles.padded_len(c) + 36 * c, 0, 0], |[xp, _, _]| {
                let (xp, bd) = xp.split_at_mut(tiles.padded_len(c));
                large::transform_input(&tiles, (img, c), (xp, bd), (v, 36 * c), false);
            })
        };
        let place = |t, a, b| tiles.place(t, a, b);
        return weight_grad(&layer, |p| p, input, (place, &large::OutputGradient), &large::Taps);
    }
    let tiles = Tiles::new(h, w);
    // A = [1 0; 1 1; 1 -1; 0 -1]: `A g Aᵀ` of (g00, g01, g10, g11), row by row.
    let a_g_a = |[a, b, c, d]: [f32x8; 4]| -> [f32x8; 16] {
        let (r0, r1) = ([a, a + b, a - b, -b], [c, c + d, c - d, -d]);
        let rows: [[f32x8; 4]; 4] =
            [r0, array::from_fn(|j| r0[j] + r1[j]), array::from_fn(|j| r0[j] - r1[j]), r1.map(|v| -v)];
        array::from_fn(|e| rows[e / 4][e % 4])
    };
    let layer = Layer { x, n, dims: (c, h, w), dy, o, plane: h * w, count: tiles.count(), side: 2 };
    let input = |img: &[f32], v: &mut [f32]| {
        with_scratch([tiles.padded_len(c) + 16 * c, 0, 0], |[xp, _, _]| {
            let (xp, bd) = xp.split_at_mut(tiles.padded_len(c));
            tiles.transform_input(img, c, xp, bd, v, 16 * c);
        })
    };
    let place = |t, a, b| tiles.place(t, a, b);
    weight_grad(&layer, |p| p, input, (place, &a_g_a), &Taps)
}

/// Where rows of `len` values go in a GEMM operand: a cache line (16
/// values) further apart than `len` when that is a multiple of 4 KiB.
///
/// Why: the Winograd GEMMs read one position's values from every tile's
/// row, and at a multiple of 4 KiB all those reads fall into the same few
/// L1 sets (which L2 sets too depends on where the OS put the pages). A
/// 3x3 kernel gradient of 128 → 256 channels at 8x8 (its tiles' output
/// gradients 16 x 256 values each) took 12.2-14.2 ms a call in six
/// processes with the padding and 13.5-21.2 ms without, alternating
/// (`RAYON_NUM_THREADS=1`, batch 64, BENCHMARKS.md); the forward over rows
/// of 16 x 128 values 10.7-10.9 instead of 11.0-11.3 ms (4 pairs).
fn unaliased(len: usize) -> usize {
    if len.is_multiple_of(ALIASED) { len + 16 } else { len }
}

/// A batch's convolution layer as its kernel gradient sees it: `x`, `n`
/// images of `dims` (C, H, W), and `dy`, the gradient of its output, `o`
/// planes of `plane` pixels per image, which `count` tiles of `side` x
/// `side` outputs cover.
struct Layer<'a> {
    x: &'a [f32],
    n: usize,
    dims: Dims,
    dy: &'a [f32],
    o: usize,
    plane: usize,
    count: usize,
    side: usize,
}

/// The fewest tiles a group of images sums over in one GEMM: its inner
/// dimension.
const MIN_TILES: usize = 256;

/// The fewest multiply-adds per transformed value, `pairs C O / (pairs
/// C + P O)`, for which a kernel gradient runs by Winograd: below, moving
/// the transforms through memory costs more than the multiply-adds saved.
/// Measured in training steps (one thread, the benchmark's networks, old
/// and new alternating step by step, weight gradients' time per step):
/// from 128 down to 64 (adding the layers at 85: 64 into 128 channels
/// at 4x4 stride 2, 128 into 256 at 3x3) 357 → 342, 473 → 429 and 361 →
/// 309 ms at 64 px; from 64 down to 32 (adding the width-32 networks'
/// layers at 43) 123 → 115, 157 → 151 and 124 → 117 ms; down to 8 (adding
/// the RGB layers, ~10) 25 → 39, 35 → 47, 26 → 45 ms at 32 px, width 32.
/// The comparison moves by up to ~9% with no change at all (an A/A run),
/// so 32 and 64 are level within it; 8 is not.
const MIN_MACS_PER_VALUE: usize = 32;

/// A Winograd convolution's kernel gradient (O, C, taps), the algorithm
/// differentiated: `Gᵀ [Σ_tiles (A dy Aᵀ) ⊙ (Bᵀ d B)] G`.
///
/// `input(image, v)` writes an image's `Bᵀ d B` as the forward makes it,
/// tiles x E x C; `(place, a_g_a)` make its `A dy Aᵀ`, tiles x P x O:
/// output (a, b) of tile t is pixel `place(t, a, b)` of the plane, if
/// inside it, and `a_g_a` maps a tile's Q output values (row by row) to
/// its P positions. Pair e of `v` meets position `position(e)` of the
/// gradient; `taps_of` maps an (o, c) kernel's gradient at its E
/// transformed values to its T taps (the transpose of `G g Gᵀ`). None
/// when the layer is too narrow to gain (see [`MIN_MACS_PER_VALUE`]) or
/// empty.
///
/// Groups of images go one after the other; within a group the threads
/// transform images, then share out the pairs, each one (O x tiles) *
/// (tiles x C) GEMM over all the group's tiles that adds into the pair's
/// accumulator. An earlier version summed per group of ~512 GEMM
/// columns, each thread into its own accumulators (2.25x the kernel's
/// size), and lost to the patch GEMM (BENCHMARKS.md); here a group is as
/// large as those accumulators or larger, which it then reads and writes
/// once, and the operands stay allocated between calls.
fn weight_grad<const Q: usize, const P: usize, const E: usize, const T: usize>(
    layer: &Layer,
    position: impl Fn(usize) -> usize + Sync,
    input: impl Fn(&[f32], &mut [f32]) + Sync,
    (place, a_g_a): (impl Fn(usize, usize, usize) -> Option<usize> + Sync, &(impl Lanes<Q, P> + Sync)),
    taps_of: &(impl Lanes<E, T> + Sync),
) -> Option<Vec<f32>> {
    let &Layer { x, n, dims: (c, h, w), dy, o, plane, count, side } = layer;
    let pairs = E;
    // Transformed values per tile: its input's and its output gradient's.
    let per_tile = pairs * c + P * o;
    if count * c * o == 0 || pairs * c * o < MIN_MACS_PER_VALUE * per_tile {
        return None;
    }
    assert!(
        x.len() == n * c * h * w && dy.len() == n * o * plane,
        "winograd weight grad: {} and {} values for {n} images of {c}x{h}x{w} and {o}x{plane}",
        x.len(),
        dy.len()
    );
    // Images per group: their transforms about as large as the
    // accumulators they add into, and at least MIN_TILES tiles.
    let group = (pairs * o * c).div_ceil(count * per_tile).max(MIN_TILES.div_ceil(count)).clamp(1, n.max(1));
    let stride = unaliased(P * o);
    let lens = [group * count * pairs * c, group * count * stride, pairs * o * c];
    Some(with_shared(lens, |[v, g, du]| {
        let zeros = vec![0f32; o];
        for i0 in (0..n).step_by(group) {
            let tiles = group.min(n - i0) * count;
            let xs = x[i0 * c * h * w..].par_chunks_exact(c * h * w);
            v[..tiles * pairs * c].par_chunks_mut(count * pairs * c).zip(xs).for_each(|(v, img)| input(img, v));
            let dys = dy[i0 * o * plane..].par_chunks_exact(o * plane);
            g[..tiles * stride].par_chunks_mut(count * stride).zip(dys).for_each(|(g, img)| {
                with_scratch([plane * o, 0, 0], |[px, _, _]| {
                    transpose(img, plane, px, o, (o, plane), Store::Set);
                    for (t, g) in g.chunks_exact_mut(stride).enumerate() {
                        let d = |a, b| place(t, a, b).map_or(&zeros[..], |at| &px[at * o..][..o]);
                        let mut rows = g.chunks_exact_mut(o);
                        let dst = array::from_fn(|_| rows.next().expect("P positions"));
                        apply_across(array::from_fn(|e| d(e / side, e % side)), dst, None, a_g_a);
                    }
                })
            });
            // dU[e] (O x C) += Σ_tiles (A dy Aᵀ)[position(e)]ᵀ (Bᵀ d B)[e].
            du.par_chunks_mut(o * c).enumerate().for_each(|(e, du)| {
                let g = Operand::transposed(&g[position(e) * o..], stride);
                matmul(o, c, tiles, du, i0 > 0, g, Operand::plain(&v[e * c..], pairs * c));
            });
        }
        // dW (O*C x T): each (o, c) kernel's E values of dU to its taps.
        taps::to_taps(taps_of, du)
    }))
}
