//! One image through a constant 3x3 convolution (the explorer's
//! generators) by F(2x2, 3x3), with 16 tiles side by side as the 16
//! columns of `narrow`'s kernel.
//!
//! Why: a batch of one keeps the planar path, a GEMM of the kernel (O x 9C)
//! by the image's patches (9C x H W) that the gemm crate packs anew on
//! every call: the 28 px pixel-shuffle generator's 7x7 layer, 128 → 256
//! channels, took 0.12-0.13 of its 0.21 ms per image on two threads. Here
//! the transformed kernel is packed once, as a panel set per position, and
//! 16 tiles (2x2 output pixels each) are a GEMM's 16 columns: 16 products
//! per tile and (c, o) pair instead of 36 (a 7x7 image: 16 tiles covering
//! 8x8 pixels, 256 products per pair instead of 441). Per image, this way
//! and the planar one alternating (BENCHMARKS.md, 2026-12-03): the 28 px
//! pixel-shuffle generator 0.20 → 0.16 ms on two threads, 0.25 → 0.19 on
//! one; 32 px 0.35 → 0.31 and 0.49 → 0.43; 64 px 2.1 → 1.9 and 3.0 → 2.3.

use std::array;

use rayon::prelude::*;

use super::super::conv::with_scratch;
use super::super::narrow::{self, COLS, Panels};
use super::super::transpose::{Store, transpose};
use super::{Tiles, Transformed, output_rows};

/// A kernel's transform, position by position, in panels.
pub(in crate::ops) struct Single {
    positions: Vec<Panels>,
    c: usize,
    o: usize,
}

impl Single {
    /// The panels of `u`, a convolution's (not a transposed one's)
    /// transform; None where `narrow`'s kernel does not run.
    pub(in crate::ops) fn new(u: &Transformed) -> Option<Self> {
        assert!(
            u.kernel == super::Kernel::Conv && !u.flipped,
            "winograd single: the transform of a convolution's own kernel"
        );
        let (c, o) = (u.c, u.o);
        // Position p of a convolution's transform is its (O x C) matrix, row-major.
        let positions =
            u.u.chunks_exact(u.stride()).map(|a| Panels::new(&a[..c * o], o, c)).collect::<Option<Vec<_>>>()?;
        Some(Self { positions, c, o })
    }

    /// Whether an image of H x W pixels takes fewer products this way than
    /// by patches (a fifth fewer at least): not a 4x4 one, whose 4 tiles
    /// would fill a quarter of the columns.
    pub(in crate::ops) fn pays(h: usize, w: usize) -> bool {
        let blocks = Tiles::new(h, w).count().div_ceil(COLS);
        5 * 16 * COLS * blocks < 4 * 9 * h * w
    }

    /// `y` (O x H x W) = the convolution of `x` (C x H x W) plus `bias`:
    /// the input transformed on this thread, then the output channels
    /// shared out between the threads in whole panels, each part its GEMMs
    /// and its output transform.
    pub(in crate::ops) fn conv(&self, x: &[f32], (h, w): (usize, usize), bias: Option<&[f32]>, y: &mut [f32]) {
        let (c, o) = (self.c, self.o);
        assert!(x.len() == c * h * w && y.len() == o * h * w, "winograd single: {c}x{h}x{w} in, {o} out");
        let tiles = Tiles::new(h, w);
        let (count, blocks) = (tiles.count(), tiles.count().div_ceil(COLS));
        // The batch path's transform (tiles x 16 x C, channels vectorized),
        // then block b's position p as C rows of its 16 tiles.
        let mut v = vec![0f32; blocks * 16 * c * COLS];
        with_scratch([tiles.padded_len(c) + 16 * c, count * 16 * c, 0], |[xp, tv, _]| {
            let (xp, bd) = xp.split_at_mut(tiles.padded_len(c));
            tiles.transform_input(x, c, xp, bd, tv, 16 * c);
            for (b, v) in v.chunks_exact_mut(16 * c * COLS).enumerate() {
                let live = COLS.min(count - b * COLS);
                for (p, v) in v.chunks_exact_mut(c * COLS).enumerate() {
                    transpose(&tv[(b * COLS * 16 + p) * c..], 16 * c, v, COLS, (live, c), Store::Set);
                }
            }
        });
        // Where each block's outputs go: (lane, output e of the tile's 4, pixel).
        let spots: Vec<Vec<(usize, usize, usize)>> = (0..blocks)
            .map(|b| {
                let lanes = (0..COLS.min(count - b * COLS)).flat_map(|l| (0..4).map(move |e| (l, e)));
                lanes.filter_map(|(l, e)| tiles.place(b * COLS + l, e / 2, e % 2).map(|at| (l, e, at))).collect()
            })
            .collect();
        let per_part = o.div_ceil(rayon::current_num_threads().max(1)).next_multiple_of(narrow::ROWS);
        y.par_chunks_mut(per_part * h * w).enumerate().for_each(|(q, out)| {
            let (o0, rows) = (q * per_part, out.len() / (h * w));
            // Block b, position p: the part's rows of 16 tiles.
            let mut m = vec![0f32; blocks * 16 * rows * COLS];
            // Position by position, every block in turn, so that a position's
            // panels, read for the first block, are still cached for the rest.
            for p in 0..16 {
                for e in (p..blocks * 16).step_by(16) {
                    let part = &mut m[e * rows * COLS..][..rows * COLS];
                    self.positions[p].product(o0, &v[e * c * COLS..][..c * COLS], part, false);
                }
            }
            for (r, plane) in out.chunks_exact_mut(h * w).enumerate() {
                let b0 = bias.map_or(0.0, |b| b[o0 + r]);
                for (b, spots) in spots.iter().enumerate() {
                    let at = |p: usize| -> &[f32; COLS] {
                        m[((b * 16 + p) * rows + r) * COLS..][..COLS].try_into().expect("16 lanes")
                    };
                    let outs = untransform_lanes(array::from_fn(at));
                    for &(l, e, at) in spots {
                        plane[at] = outs[e][l] + b0;
                    }
                }
            }
        });
    }
}

/// `Aᵀ m A` of 16 tiles (16 positions, one value per tile): each tile's
/// outputs (a, b) as `[2a + b][lane]`.
fn untransform_lanes(m: [&[f32; COLS]; 16]) -> [[f32; COLS]; 4] {
    let mut out = [[0f32; COLS]; 4];
    // am[r][j] = row r of Aᵀ m at column j.
    let mut am = [[[0f32; COLS]; 4]; 2];
    for j in 0..4 {
        for l in 0..COLS {
            [am[0][j][l], am[1][j][l]] = output_rows([m[j][l], m[4 + j][l], m[8 + j][l], m[12 + j][l]]);
        }
    }
    for (r, am) in am.iter().enumerate() {
        for l in 0..COLS {
            [out[2 * r][l], out[2 * r + 1][l]] = output_rows([am[0][l], am[1][l], am[2][l], am[3][l]]);
        }
    }
    out
}
