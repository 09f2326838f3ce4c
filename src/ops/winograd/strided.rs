//! Batched 4x4 stride-2 convolutions and transposed convolutions with
//! padding 1, every DCGAN's down- and upsampling layers, by Winograd's
//! F(2x2, 2x2), phase by phase.
//!
//! Why: by the parity of its kernel taps, a stride-2 convolution is the sum
//! of 4 phases, each a 2x2 stride-1 correlation of every other row and
//! column of the padded input; by the parity of its output pixels, a
//! stride-2 transposed convolution is 4 phases, each a 2x2 correlation of
//! the input with every other kernel tap. F(2x2, 2x2) makes a 2x2 output
//! tile of a 2x2 correlation from 9 products instead of 16 (1.78x fewer
//! multiply-adds), with integer transforms: Bᵀ = [1 -1 0; 0 1 0; 0 -1 1],
//! G = [1 0; 1 1; 0 1], Aᵀ = [1 1 0; 0 1 1]. A transposed convolution's
//! phases read overlapping windows of its input, whose transforms they
//! share ([`shared_rows`]). Kernel gradients of wide layers whose outputs
//! are 8x8 or larger run by F(4x4, 2x2) ([`large_pays`]).

use std::array;
use std::sync::OnceLock;

use wide::f32x8;

use super::super::conv::{Dims, with_scratch};
use super::taps::{sandwich, sandwich_rows};
use super::{Batch, Flip, Kernel, Lanes, Layer, Tiles, Transformed, apply_across, pad, transform_output, weight_grad};

/// G of F(2x2, 2x2) times a column of 2 taps: G = [1 0; 1 1; 0 1].
#[inline(always)]
fn g_rows([a, b]: [f32x8; 2]) -> [f32x8; 3] {
    [a, a + b, b]
}

/// Gᵀ times a column of 3 values: a transform's gradient back to taps.
#[inline(always)]
fn g_t_rows([p, q, r]: [f32x8; 3]) -> [f32x8; 2] {
    [p + q, q + r]
}

/// Aᵀ of F(2x2, 2x2) times a column of 3 products.
#[inline(always)]
fn output_rows([a, b, c]: [f32x8; 3]) -> [f32x8; 2] {
    [a + b, b + c]
}

/// A 4x4 kernel's 16 taps (row by row) to its 36 positions: each phase's
/// 2x2 sub-kernel `G g Gᵀ`, where `tap(phase, a, b)` is the (row, column)
/// of the tap the phase's sub-kernel has at (a, b); position (i, j) of
/// phase (p, q) is the e-th of 36 with e = 4 (3i + j) + 2p + q.
#[inline(always)]
fn phase_positions(taps: [f32x8; 16], tap: impl Fn(usize, usize, usize) -> (usize, usize)) -> [f32x8; 36] {
    let mut u = [f32x8::ZERO; 36];
    for phase in 0..4 {
        let mut sub = [[f32x8::ZERO; 2]; 2];
        for (a, b) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            let (r, c) = tap(phase, a, b);
            sub[a][b] = taps[4 * r + c];
        }
        let v = sandwich(g_rows, &sub);
        for pos in 0..9 {
            u[4 * pos + phase] = v[pos / 3][pos % 3];
        }
    }
    u
}

/// Phase (p, q) of a convolution's kernel has taps (2a + p, 2b + q).
#[inline(always)]
fn conv_tap(phase: usize, a: usize, b: usize) -> (usize, usize) {
    (2 * a + phase / 2, 2 * b + phase % 2)
}

/// [`phase_positions`] of a convolution's kernel.
struct ConvPositions;

impl Lanes<16, 36> for ConvPositions {
    #[inline(always)]
    fn apply(&self, taps: [f32x8; 16]) -> [f32x8; 36] {
        phase_positions(taps, conv_tap)
    }
}

/// [`phase_positions`] of a transposed convolution's kernel: its output
/// phase (p, q) reads taps (3 - p - 2a, 3 - q - 2b).
struct ConvTPositions;

impl Lanes<16, 36> for ConvTPositions {
    #[inline(always)]
    fn apply(&self, taps: [f32x8; 16]) -> [f32x8; 36] {
        phase_positions(taps, |phase, a, b| (3 - phase / 2 - 2 * a, 3 - phase % 2 - 2 * b))
    }
}

/// A convolution kernel's gradient at its 36 positions back to its 16
/// taps: the transpose of [`ConvPositions`], `Gᵀ du G` per phase.
struct ConvTaps;

impl Lanes<36, 16> for ConvTaps {
    #[inline(always)]
    fn apply(&self, du: [f32x8; 36]) -> [f32x8; 16] {
        phase_taps::<3, 36>(du, g_t_rows)
    }
}

/// A convolution kernel's gradient at each phase's S x S positions (pair
/// e: position e / 4 of phase e % 4) back to its 16 taps: `g_t` (Gᵀ times
/// a column of S) along both axes of each phase's grid, `Gᵀ du G`.
#[inline(always)]
fn phase_taps<const S: usize, const E: usize>(du: [f32x8; E], g_t: impl Fn([f32x8; S]) -> [f32x8; 2]) -> [f32x8; 16] {
    let mut w = [f32x8::ZERO; 16];
    for phase in 0..4 {
        let mut d = [[f32x8::ZERO; S]; S];
        for pos in 0..S * S {
            d[pos / S][pos % S] = du[4 * pos + phase];
        }
        let sub = sandwich(&g_t, &d);
        for (a, b) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            let (r, c) = conv_tap(phase, a, b);
            w[4 * r + c] = sub[a][b];
        }
    }
    w
}

/// Bᵀ of F(2x2, 2x2) times a column of 3 values.
#[inline(always)]
fn b_rows([x0, x1, x2]: [f32x8; 3]) -> [f32x8; 3] {
    [x0 - x1, x1, x2 - x1]
}

/// `Bᵀ d B` of a 3x3 tile, `d[3u + v]` at (u, v): position (i, k) at
/// `3i + k`. Applied across channel vectors, all 9 positions in one pass.
///
/// Why one pass: as two, `Bᵀ d` into a scratch tile and that times B,
/// each value went through memory twice more, and a third of the rows
/// were plain copies (Bᵀ's middle row). Alternating steps, one thread:
/// 32 and 64 px training steps 1-4.5% faster. The same for F(2x2, 3x3)'s
/// 4x4 tiles (16 vectors in, 16 out) ran 1-5% slower than its two passes,
/// which copy nothing.
#[inline(always)]
fn b_d_b(d: [f32x8; 9]) -> [f32x8; 9] {
    let cols: [[f32x8; 3]; 3] = array::from_fn(|v| b_rows([d[v], d[3 + v], d[6 + v]]));
    let rows: [[f32x8; 3]; 3] = array::from_fn(|i| b_rows([cols[0][i], cols[1][i], cols[2][i]]));
    array::from_fn(|e| rows[e / 3][e % 3])
}

/// `Bᵀ d B` of each of `count` tiles' 4 phases, into `v` as tiles x 9
/// positions x 4 phases x C: `pixel(tile, phase, a, b)` is the (row,
/// column) of the padded image `xp` (rows `cols` pixels of C values) that
/// the phase's tile has at (a, b).
fn transform_phases(
    xp: &[f32],
    (c, cols, count): (usize, usize, usize),
    pixel: impl Fn(usize, usize, usize, usize) -> (usize, usize),
    v: &mut [f32],
) {
    for (tile, vt) in v.chunks_exact_mut(36 * c).take(count).enumerate() {
        for phase in 0..4 {
            let d = array::from_fn(|e| {
                let (r, col) = pixel(tile, phase, e / 3, e % 3);
                &xp[(r * cols + col) * c..][..c]
            });
            // Position p of the phase at vt[(4p + phase) C..]: rows 4C apart.
            let mut rows = vt[phase * c..].chunks_mut(4 * c);
            apply_across(d, array::from_fn(|_| &mut rows.next().expect("9 positions")[..c]), None, &b_d_b);
        }
    }
}

/// How a stride-2 convolution over H x W pixels divides into M x M output
/// tiles (M is 2, or 4 where [`large_pays`]): tile (i, j) reads padded rows 2M
/// i..2M i + 2M + 1 and the columns alike.
#[derive(Debug, Clone, Copy)]
struct Strided {
    h: usize,
    w: usize,
    m: usize,
    ho: usize,
    wo: usize,
    tw: usize,
    rows: usize,
    cols: usize,
}

impl Strided {
    fn new(h: usize, w: usize) -> Self {
        Self::of(h, w, 2)
    }

    fn of(h: usize, w: usize, m: usize) -> Self {
        let (ho, wo) = (h / 2, w / 2);
        let (th, tw) = (ho.div_ceil(m), wo.div_ceil(m));
        Self { h, w, m, ho, wo, tw, rows: 2 * m * th + 2, cols: 2 * m * tw + 2 }
    }

    fn count(&self) -> usize {
        (self.rows - 2) / (2 * self.m) * self.tw
    }

    fn padded_len(&self, c: usize) -> usize {
        self.rows * self.cols * c
    }

    /// Each tile's `Bᵀ d B` for each phase (p, q), the tile of rows 2m + p
    /// and columns 2l + q, into `v` as tiles x 9 positions x 4 phases x C;
    /// `xp` holds the padded image.
    fn transform_input(&self, x: &[f32], c: usize, xp: &mut [f32], v: &mut [f32]) {
        assert_eq!(self.m, 2, "winograd: F(2x2, 2x2) input transform of {}x{} tiles", self.m, self.m);
        pad(x, (c, self.h, self.w), &mut xp[..self.padded_len(c)], self.cols);
        let tw = self.tw;
        let pixel = |t, ph, a, b| (4 * (t / tw) + 2 * a + ph / 2, 4 * (t % tw) + 2 * b + ph % 2);
        transform_phases(xp, (c, self.cols, self.count()), pixel, v);
    }

    /// [`Self::transform_input`] for 4x4 tiles: each tile's `Bᵀ d B` of
    /// F(4x4, 2x2) for each phase, 25 positions, into `v` as tiles x 25
    /// positions x 4 phases x C, each phase's tile in two passes (along
    /// its rows into `rows`, 25 x C, then down its columns).
    fn transform_input_large(&self, x: &[f32], c: usize, (xp, rows): (&mut [f32], &mut [f32]), v: &mut [f32]) {
        assert_eq!(self.m, 4, "winograd: F(4x4, 2x2) input transform of {}x{} tiles", self.m, self.m);
        let (xp, rows) = (&mut xp[..self.padded_len(c)], &mut rows[..25 * c]);
        pad(x, (c, self.h, self.w), xp, self.cols);
        for (t, vt) in v.chunks_exact_mut(100 * c).take(self.count()).enumerate() {
            for phase in 0..4 {
                let (r, col) = (8 * (t / self.tw) + phase / 2, 8 * (t % self.tw) + phase % 2);
                for (a, row) in rows.chunks_exact_mut(5 * c).enumerate() {
                    let d = array::from_fn(|b| &xp[((r + 2 * a) * self.cols + col + 2 * b) * c..][..c]);
                    let mut dst = row.chunks_exact_mut(c);
                    apply_across(d, array::from_fn(|_| dst.next().expect("5 values")), None, &large_b_rows);
                }
                // Position (i, k) of the phase at vt[(4 (5 i + k) + phase) C..].
                for k in 0..5 {
                    let mut dst = vt.chunks_exact_mut(c).skip(4 * k + phase).step_by(20);
                    let d = array::from_fn(|a| &rows[(5 * a + k) * c..][..c]);
                    apply_across(d, array::from_fn(|_| dst.next().expect("5 positions")), None, &large_b_rows);
                }
            }
        }
    }

    /// Where tile `t`'s output (a, b) lies in the Ho x Wo output, if inside it.
    fn place(&self, t: usize, a: usize, b: usize) -> Option<usize> {
        let (y, x) = (self.m * (t / self.tw) + a, self.m * (t % self.tw) + b);
        (y < self.ho && x < self.wo).then_some(y * self.wo + x)
    }
}

/// The stride-2 convolution of a batch (kernel (O, C, 4, 4)): phase (p,
/// q) correlates rows 2m + p and columns 2l + q of the padded input with
/// taps (2a + p, 2b + q), and the phases sum inside each position's GEMMs.
/// `kept` holds the kernel's transform once made.
pub(in crate::ops) fn conv4x4s2(batch: &Batch, kept: &OnceLock<Transformed>) -> Vec<f32> {
    let ((c, h, w), o) = (batch.dims, batch.o);
    let geom = Strided::new(h, w);
    let (count, plane) = (geom.count(), geom.ho * geom.wo);
    let u = Transformed::kept_or_new(kept, batch.wt, Kernel::Conv, (c, o), &ConvPositions, Flip::Reversed);
    u.packed(); // here, by both threads, before the groups need it
    let lens = |t| [geom.padded_len(c), 36 * t * c, 9 * t * o];
    batch.by_groups((count, plane), lens, |images, out, t, [xp, v, m]| {
        for (img, v) in images.chunks_exact(c * h * w).zip(v.chunks_exact_mut(count * 36 * c)) {
            geom.transform_input(img, c, xp, v);
        }
        // Position p: the 4 phases' (tiles x C), side by side, times
        // their (C x O) matrices stacked, which sums the phases.
        for (p, m) in m.chunks_exact_mut(t * o).enumerate() {
            u.product(4 * p..4 * p + 4, &v[4 * p * c..], 36 * c, m, false);
        }
        let place = |t, a, b| geom.place(t, a, b);
        out.fill((o, plane), |i, tile, px| {
            let maps = (output_rows, output_rows);
            transform_output::<3, 2>(m, (t, i * count, count), (o, batch.bias), maps, place, tile, px);
        })
    })
}

/// The stride-2 transposed convolution of `x` (N, C, H, W) with `wt` (C,
/// O, 4, 4) plus `bias`, to (N, O, 2H, 2W): output phase (p, q), the
/// pixels (2m + p, 2l + q), correlates input rows m - 1 + p.. and columns
/// l - 1 + q.. with taps (3 - p - 2a, 3 - q - 2b). `kept` holds the
/// kernel's transform once made.
pub(in crate::ops) fn conv_t4x4s2(batch: &Batch, kept: &OnceLock<Transformed>) -> Vec<f32> {
    let ((c, h, w), o) = (batch.dims, batch.o);
    let tiles = Tiles::new(h, w);
    let (count, plane, cols) = (tiles.count(), 4 * h * w, 2 * tiles.tw + 2);
    let u = Transformed::kept_or_new(kept, batch.wt, Kernel::Transposed, (c, o), &ConvTPositions, Flip::Reversed);
    u.packed(); // here, by both threads, before the groups need it
    let lens = |t| [tiles.padded_len(c) + 20 * c, 25 * t * c, 36 * t * o];
    batch.by_groups((count, plane), lens, |images, out, t, [xp, v, m]| {
        for (img, v) in images.chunks_exact(c * h * w).zip(v.chunks_exact_mut(count * 25 * c)) {
            let (xp, rows) = xp.split_at_mut(tiles.padded_len(c));
            tiles.pad(img, c, xp);
            transform_shared(xp, (c, cols, count, tiles.tw), rows, v);
        }
        // Phase by phase, position p: (tiles x C) times (C x O), the
        // tiles' rows of the block the phase's position reads.
        for (e, m) in m.chunks_exact_mut(t * o).enumerate() {
            let (phase, pos) = (e / 9, e % 9);
            let block = 5 * SHARED[phase / 2][pos / 3] + SHARED[phase % 2][pos % 3];
            u.product(4 * pos + phase..4 * pos + phase + 1, &v[block * c..], 25 * c, m, false);
        }
        out.fill((o, plane), |i, tile, px| {
            for (phase, m) in m.chunks_exact(9 * t * o).enumerate() {
                let (p, q) = (phase / 2, phase % 2);
                let place = |t, a, b| tiles.place(t, a, b).map(|at| (2 * (at / w) + p) * 2 * w + 2 * (at % w) + q);
                let maps = (phase_output_rows(p), phase_output_rows(q));
                transform_output::<3, 2>(m, (t, i * count, count), (o, batch.bias), maps, place, tile, px);
            }
        })
    })
}

/// A transposed convolution's two phases along an axis read overlapping
/// windows of 3 input values in a tile's 4, x0..x3: phase 0 reads x0..x2,
/// which Bᵀ makes (x0 - x1, x1, x2 - x1), phase 1 x1..x3, (x1 - x2, x2,
/// x3 - x2). Up to the sign of phase 1's first, that is 5 values: these,
/// [`SHARED`] says which is each phase's, and [`phase_output_rows`] undoes
/// the sign.
///
/// Why: a tile's 4 phases then take 25 transformed values per channel
/// instead of 36, made from its 16 input pixels instead of 4 windows of 9,
/// and 9 of the 25 serve 2 or 4 of the 36 GEMMs. Timed inside training
/// steps (one thread, 32 px transposed-conv net, 40 steps, 200 calls per
/// layer): input transforms 0.87 → 0.74 ms a call for 128 → 64 channels
/// at 8x8 and 0.70 → 0.55 for 256 → 128 at 4x4; products 5.96 → 5.82 and
/// 6.25 → 5.93 ms.
#[inline(always)]
fn shared_rows([x0, x1, x2, x3]: [f32x8; 4]) -> [f32x8; 5] {
    [x0 - x1, x1, x2 - x1, x2, x3 - x2]
}

/// Which of [`shared_rows`]' values phase p's position i is: `SHARED[p][i]`.
const SHARED: [[usize; 3]; 2] = [[0, 1, 2], [2, 3, 4]];

/// Each tile's 25 values of [`shared_rows`] along both axes, into `v` as
/// tiles x 25 x C: tile t reads rows 2 (t / tw).. and columns 2 (t %
/// tw).. of the padded image `xp` (rows `cols` pixels of C values), each
/// row's 5 values through `rows` (20 x C).
///
/// Why two passes: as one map of 16 pixels to 25 values, the vectors
/// spilled out of registers and the transform took longer than the 36
/// values of four 3x3 windows had (one thread, 32 px, 1.09 against 0.88
/// ms a call for 128 channels at 8x8).
fn transform_shared(xp: &[f32], (c, cols, count, tw): (usize, usize, usize, usize), rows: &mut [f32], v: &mut [f32]) {
    let rows = &mut rows[..20 * c];
    for (t, vt) in v.chunks_exact_mut(25 * c).take(count).enumerate() {
        let (r, col) = (2 * (t / tw), 2 * (t % tw));
        for (i, row) in rows.chunks_exact_mut(5 * c).enumerate() {
            let d = array::from_fn(|j| &xp[((r + i) * cols + col + j) * c..][..c]);
            let mut dst = row.chunks_exact_mut(c);
            apply_across(d, array::from_fn(|_| dst.next().expect("5 values")), None, &shared_rows);
        }
        for j in 0..5 {
            let mut dst = vt.chunks_exact_mut(c).skip(j).step_by(5);
            let d = array::from_fn(|i| &rows[(5 * i + j) * c..][..c]);
            apply_across(d, array::from_fn(|_| dst.next().expect("5 values")), None, &shared_rows);
        }
    }
}

/// Aᵀ of F(2x2, 2x2) times a column of 3 products of phase `phase` along
/// an axis: phase 1's first product came from the negated value of
/// [`shared_rows`], so it enters with its sign undone.
fn phase_output_rows(phase: usize) -> impl Fn([f32x8; 3]) -> [f32x8; 2] + Copy {
    let sign = f32x8::splat(if phase == 1 { -1.0 } else { 1.0 });
    move |[a, b, c]| [b + a * sign, b + c]
}

/// The kernel gradient (O, C, 4, 4) of a batch's stride-2 convolution
/// from its input `x` (N, C, H, W) and output gradient `dy` (N, O, H/2,
/// W/2), by [`weight_grad`] phase by phase with F(4x4, 2x2) where
/// [`large_pays`] (2.56x fewer multiply-adds than the patch GEMM), else
/// F(2x2, 2x2) (1.78x fewer); None for narrow layers. A
/// transposed convolution's kernel gradient is this with the roles of its
/// input and output gradient swapped.
pub(in crate::ops) fn conv4x4s2_weight_grad(
    x: &[f32],
    n: usize,
    (c, h, w): Dims,
    dy: &[f32],
    o: usize,
) -> Option<Vec<f32>> {
    let (ho, wo) = (h / 2, w / 2);
    if large_pays((ho, wo), c, o) {
        let geom = Strided::of(h, w, 4);
        let layer = Layer { x, n, dims: (c, h, w), dy, o, plane: ho * wo, count: geom.count(), side: 4 };
        let input = |img: &[f32], v: &mut [f32]| {
            with_scratch([geom.padded_len(c) + 25 * c, 0, 0], |[xp, _, _]| {
                geom.transform_input_large(img, c, xp.split_at_mut(geom.padded_len(c)), v);
            })
        };
        let place = |t, a, b| geom.place(t, a, b);
        return weight_grad(&layer, |e| e / 4, input, (place, &LargeOutputGradient), &LargeTaps);
    }
    let geom = Strided::new(h, w);
    let plane = geom.ho * geom.wo;
    // A = [1 0; 1 1; 0 1]: `A g Aᵀ` of (g00, g01, g10, g11), row by row.
    let a_g_a = |[a, b, c, d]: [f32x8; 4]| [a, a + b, b, a + c, a + b + c + d, b + d, c, c + d, d];
    let layer = Layer { x, n, dims: (c, h, w), dy, o, plane, count: geom.count(), side: 2 };
    let input = |img: &[f32], v: &mut [f32]| {
        with_scratch([geom.padded_len(c), 0, 0], |[xp, _, _]| {
            geom.transform_input(img, c, xp, v);
        })
    };
    let place = |t, a, b| geom.place(t, a, b);
    // Pair e is position e / 4 of phase e % 4.
    weight_grad(&layer, |e| e / 4, input, (place, &a_g_a), &ConvTaps)
}

/// Whether a stride-2 kernel gradient with Ho x Wo outputs, C input and
/// O output channels runs by F(4x4, 2x2) (each phase's 4x4 output tile
/// from 25 products where F(2x2, 2x2)'s four tiles take 36): sides that
/// are multiples of 4, more than one tile an image, 128 channels or more
/// on both sides.
///
/// Why: the GEMMs, which sum over all tiles whatever their size, shrink
/// by 31%, while the 5x5 transforms and the 100 accumulators per (c, o)
/// pair cost more than F(2x2, 2x2)'s 36. The transforms grow with C + O
/// and the GEMMs with C O, so only wide layers gain. Timed inside 40
/// training steps (one thread, 32 px transposed-conv net, 64 → 128
/// channels at 8x8 outputs, 120 calls, Zen 4): GEMMs 675 → 506 ms, input
/// transforms 112 → 177, output gradients' 43 → 91, back to taps 18 → 62.
/// `bench --ops`, one thread, 3 calls a step, ms: 128 → 256 channels at
/// 8x8 outputs (64 px nets) 77.4 → 68.4 on a Zen 4, 49.5 / 50.6 → 47.3 /
/// 47.2 on an Emerald Rapids Xeon; 64 → 128 at 16x16 84.3 → 74.6 on the
/// Zen 4 but 57.8 / 58.1 → 59.8 / 58.5 on the Xeon, and at 8x8 (32 px)
/// 15.4 / 16.0 → 16.5 there. One tile per image (4x4 outputs) was not
/// tried: there the GEMMs would be only the batch deep, which made F(4x4,
/// 3x3) slower (`super::conv3x3_weight_grad`).
fn large_pays((ho, wo): (usize, usize), c: usize, o: usize) -> bool {
    ho.is_multiple_of(4) && wo.is_multiple_of(4) && ho * wo > 16 && c.min(o) >= 128
}

/// Bᵀ of F(4x4, 2x2) (points 0, 1, -1, 2, ∞) times a column of 5 values:
/// Bᵀ = [2 -1 -2 1 0; 0 -2 -1 1 0; 0 2 -3 1 0; 0 -1 0 1 0; 0 2 -1 -2 1].
#[inline(always)]
fn large_b_rows([x0, x1, x2, x3, x4]: [f32x8; 5]) -> [f32x8; 5] {
    let two = f32x8::splat(2.0);
    [(x0 - x2) * two - x1 + x3, x3 - x2 - x1 * two, (x1 - x2) * two - x2 + x3, x3 - x1, (x1 - x3) * two - x2 + x4]
}

/// A (Aᵀ's transpose, Aᵀ = [1 1 1 1 0; 0 1 -1 2 0; 0 1 1 4 0; 0 1 -1 8 1])
/// times a column of 4 output gradients: to 5 positions.
#[inline(always)]
fn large_a_rows([y0, y1, y2, y3]: [f32x8; 4]) -> [f32x8; 5] {
    let (two, four, eight) = (f32x8::splat(2.0), f32x8::splat(4.0), f32x8::splat(8.0));
    [y0, y0 + y1 + y2 + y3, y0 - y1 + y2 - y3, y0 + y1 * two + y2 * four + y3 * eight, y3]
}

/// Gᵀ of F(4x4, 2x2) (G = [½ 0; -½ -½; -⅙ ⅙; ⅙ ⅓; 0 1]) times a column of
/// 5 values: a transform's gradient back to 2 taps.
#[inline(always)]
fn large_g_t_rows([p0, p1, p2, p3, p4]: [f32x8; 5]) -> [f32x8; 2] {
    let (half, sixth, third) = (f32x8::splat(0.5), f32x8::splat(1.0 / 6.0), f32x8::splat(1.0 / 3.0));
    [(p0 - p1) * half + (p3 - p2) * sixth, p4 - p1 * half + p2 * sixth + p3 * third]
}

/// A tile's 16 output gradients (row by row) to its 25 positions, `A dy Aᵀ`.
struct LargeOutputGradient;

impl Lanes<16, 25> for LargeOutputGradient {
    #[inline(always)]
    fn apply(&self, dy: [f32x8; 16]) -> [f32x8; 25] {
        sandwich_rows(large_a_rows, dy)
    }
}

/// A convolution kernel's gradient at its 100 positions (pair e: position
/// e / 4 of phase e % 4) back to its 16 taps, `Gᵀ du G` per phase.
struct LargeTaps;

impl Lanes<100, 16> for LargeTaps {
    #[inline(always)]
    fn apply(&self, du: [f32x8; 100]) -> [f32x8; 16] {
        phase_taps::<5, 100>(du, large_g_t_rows)
    }
}
