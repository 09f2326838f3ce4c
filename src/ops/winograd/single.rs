//! One image through a constant 3x3 convolution (the explorer's
//! generators) by F(2x2, 3x3) or F(4x4, 3x3), with 16 tiles side by side
//! as the 16 columns of `narrow`'s kernel.
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
//!
//! Images of 16x16 pixels or more whose sides are multiples of 4 take
//! 4x4 tiles ([`Single::side`]): 36 products per tile and pair for 16
//! outputs, where 2x2 tiles take 64, at 2.25x the transform's bytes. The
//! 64 px pixel-shuffle generator's 128 → 256 layer at 16x16, one thread
//! on a shared (busy) Emerald Rapids Xeon, 1.43 → 0.91-0.98 ms; its whole
//! image, 400 runs each in three alternating rounds, median 4.30 / 4.82 /
//! 2.84 → 3.67 / 3.64 / 2.53 ms.

use std::array;

use rayon::prelude::*;
use wide::f32x8;

use super::super::conv::with_scratch;
use super::super::narrow::{self, COLS, Panels};
use super::super::transpose::{Store, transpose};
use super::{Tiles, Transformed, large, output_rows};

/// A kernel's transform, position by position, in panels.
pub(in crate::ops) struct Single {
    positions: Vec<Panels>,
    c: usize,
    o: usize,
}

impl Single {
    /// The panels of `u`, a convolution's (not a transposed one's)
    /// transform by F(2x2, 3x3) or F(4x4, 3x3); None where `narrow`'s
    /// kernel does not run.
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

    /// The output side of the tiles an image of H x W pixels runs by, if
    /// this way takes fewer products than by patches (a fifth fewer at
    /// least): of 2x2 and 4x4 tiles (sides multiples of 4), those whose 16
    /// (36) positions times the 16-tile blocks are fewer. So a 4x4 image
    /// runs by patches (its 4 tiles would fill a quarter of the columns),
    /// an 8x8 one by 2x2 tiles (one block, where 4x4 tiles take a block
    /// too), a 16x16 one by 4x4 tiles (one block instead of four).
    pub(in crate::ops) fn side(h: usize, w: usize) -> Option<usize> {
        let products = |m: usize, p: usize| p * Tiles::of(h, w, m).count().div_ceil(COLS);
        let (small, large) = (products(2, 16), products(4, 36));
        let (side, products) = if large::pays(h, w) && large < small { (4, large) } else { (2, small) };
        (5 * COLS * products < 4 * 9 * h * w).then_some(side)
    }

    /// `y` (O x H x W) = the convolution of `x` (C x H x W) plus `bias`:
    /// the input transformed on this thread, then the output channels
    /// shared out between the threads in whole panels, each part its GEMMs
    /// and its output transform.
    pub(in crate::ops) fn conv(&self, x: &[f32], (h, w): (usize, usize), bias: Option<&[f32]>, y: &mut [f32]) {
        if self.positions.len() == 36 {
            let tiles = Tiles::of(h, w, 4);
            let input = |xp: &mut [f32], bd: &mut [f32], tv: &mut [f32]| {
                large::transform_input(&tiles, (x, self.c), (xp, bd), (tv, 36 * self.c), false);
            };
            self.conv_by::<6, 4>(tiles, input, large::output_rows, bias, y);
        } else {
            let tiles = Tiles::new(h, w);
            let input = |xp: &mut [f32], bd: &mut [f32], tv: &mut [f32]| {
                tiles.transform_input(x, self.c, xp, bd, tv, 16 * self.c);
            };
            self.conv_by::<4, 2>(tiles, input, output_rows, bias, y);
        }
    }

    /// [`Self::conv`] over M x M `tiles` of S x S positions: `input(xp,
    /// bd, tv)` writes the image's tiles' `Bᵀ d B` into `tv` (tiles x S S
    /// x C; `xp` for the padded image, `bd` S S x C for `Bᵀ d`), and
    /// `a_rows` multiplies a column by Aᵀ.
    fn conv_by<const S: usize, const M: usize>(
        &self,
        tiles: Tiles,
        input: impl FnOnce(&mut [f32], &mut [f32], &mut [f32]),
        a_rows: impl Fn([f32x8; S]) -> [f32x8; M] + Sync,
        bias: Option<&[f32]>,
        y: &mut [f32],
    ) {
        let (c, o, p) = (self.c, self.o, S * S);
        let plane = tiles.h * tiles.w;
        assert!(y.len() == o * plane && p == self.positions.len(), "winograd single: {o}x{plane} out, {p} positions");
        let (count, blocks) = (tiles.count(), tiles.count().div_ceil(COLS));
        // The batch path's transform (tiles x P x C, channels vectorized),
        // then block b's position p as C rows of its 16 tiles.
        let mut v = vec![0f32; blocks * p * c * COLS];
        with_scratch([tiles.padded_len(c) + p * c, count * p * c, 0], |[xp, tv, _]| {
            let (xp, bd) = xp.split_at_mut(tiles.padded_len(c));
            input(xp, bd, tv);
            for (b, v) in v.chunks_exact_mut(p * c * COLS).enumerate() {
                let live = COLS.min(count - b * COLS);
                for (q, v) in v.chunks_exact_mut(c * COLS).enumerate() {
                    transpose(&tv[(b * COLS * p + q) * c..], p * c, v, COLS, (live, c), Store::Set);
                }
            }
        });
        // Where each block's outputs go: (lane, output e of the tile's M M, pixel).
        let spots: Vec<Vec<(usize, usize, usize)>> = (0..blocks)
            .map(|b| {
                let lanes = (0..COLS.min(count - b * COLS)).flat_map(|l| (0..M * M).map(move |e| (l, e)));
                lanes.filter_map(|(l, e)| tiles.place(b * COLS + l, e / M, e % M).map(|at| (l, e, at))).collect()
            })
            .collect();
        let per_part = o.div_ceil(rayon::current_num_threads().max(1)).next_multiple_of(narrow::ROWS);
        y.par_chunks_mut(per_part * plane).enumerate().for_each(|(q, out)| {
            let (o0, rows) = (q * per_part, out.len() / plane);
            // Block b, position p: the part's rows of 16 tiles.
            let mut m = vec![0f32; blocks * p * rows * COLS];
            // Position by position, every block in turn, so that a position's
            // panels, read for the first block, are still cached for the rest.
            for (pos, panels) in self.positions.iter().enumerate() {
                for e in (pos..blocks * p).step_by(p) {
                    let part = &mut m[e * rows * COLS..][..rows * COLS];
                    panels.product(o0, &v[e * c * COLS..][..c * COLS], part, false);
                }
            }
            for (r, plane) in out.chunks_exact_mut(plane).enumerate() {
                let b0 = bias.map_or(0.0, |b| b[o0 + r]);
                for (b, spots) in spots.iter().enumerate() {
                    let at = |pos: usize| -> &[f32; COLS] {
                        m[((b * p + pos) * rows + r) * COLS..][..COLS].try_into().expect("16 lanes")
                    };
                    let outs = untransform::<S, M>(at, &a_rows);
                    for &(l, e, at) in spots {
                        plane[at] = outs[e][l] + b0;
                    }
                }
            }
        });
    }
}

/// `Aᵀ m A` of 16 tiles, S x S positions (`m(i S + j)`, one value per
/// tile) where `a_rows` multiplies a column of S by Aᵀ (M x S): each
/// tile's outputs (a, b) as `[M a + b][lane]`, in the first M M rows.
fn untransform<'a, const S: usize, const M: usize>(
    m: impl Fn(usize) -> &'a [f32; COLS],
    a_rows: impl Fn([f32x8; S]) -> [f32x8; M],
) -> [[f32; COLS]; 16] {
    let mut out = [[0f32; COLS]; 16];
    for half in 0..COLS / 8 {
        let at = |pos: usize| f32x8::new(m(pos)[8 * half..][..8].try_into().expect("8 lanes"));
        // Column j of Aᵀ m: cols[j][r] for rows r.
        let cols: [[f32x8; M]; S] = array::from_fn(|j| a_rows(array::from_fn(|i| at(i * S + j))));
        for r in 0..M {
            for (b, v) in a_rows(array::from_fn(|j| cols[j][r])).into_iter().enumerate() {
                out[M * r + b][8 * half..][..8].copy_from_slice(&v.to_array());
            }
        }
    }
    out
}
