//! 2x nearest-neighbour upsampling as one CPU op, with 2x2 sum pooling (its
//! adjoint) as the backward.
//!
//! Why: candle's backward for `upsample_nearest2d` is a grouped convolution
//! with a kernel of ones, which runs candle's generic convolution; with the
//! forward's index-by-index loop that was ~4% of a nearest-conv training
//! step. Here each output row is an input row with every value doubled.
//! On CUDA the same grouped convolution runs one convolution per channel;
//! there the upsampling is a broadcast, whose backward is a reduction.

use candle_core::{Result, Shape, Tensor};
use rayon::prelude::*;

use super::{LinearMap, MapOp, fast, fast_cuda, min_chunks};

/// (N, C, H, W) -> (N, C, 2H, 2W), each value repeated over a 2x2 block.
pub fn nearest2x(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if fast_cuda(&[x]) {
        // A broadcast, whose backward is a sum over the 2x2 blocks.
        let wide = x.reshape((n, c, h, 1, w, 1))?.broadcast_as((n, c, h, 2, w, 2))?;
        return wide.reshape((n, c, 2 * h, 2 * w));
    }
    if !fast(&[x]) {
        return x.upsample_nearest2d(2 * h, 2 * w);
    }
    x.contiguous()?.apply_op1(MapOp(Resample::Up))
}

/// The upsampling and its adjoint, each the other's backward.
#[derive(Debug, Clone, Copy)]
enum Resample {
    /// (N, C, H, W) -> (N, C, 2H, 2W), repeating.
    Up,
    /// (N, C, 2H, 2W) -> (N, C, H, W), summing each 2x2 block.
    Down,
}

impl LinearMap for Resample {
    fn name(self) -> &'static str {
        match self {
            Resample::Up => "ganscope-upsample-nearest2x",
            Resample::Down => "ganscope-sum-pool2x",
        }
    }

    fn adjoint(self) -> Self {
        match self {
            Resample::Up => Resample::Down,
            Resample::Down => Resample::Up,
        }
    }

    /// The output of `x` (N, C, H, W), plane by plane.
    fn run(self, x: &[f32], (n, c, h, w): (usize, usize, usize, usize)) -> Result<(Vec<f32>, Shape)> {
        let (shape, out_plane) = match self {
            Resample::Up => (Shape::from((n, c, 2 * h, 2 * w)), 4 * h * w),
            Resample::Down if h % 2 == 0 && w % 2 == 0 => (Shape::from((n, c, h / 2, w / 2)), h * w / 4),
            Resample::Down => candle_core::bail!("2x2 sum pooling: odd size {h}x{w}"),
        };
        let mut y = vec![0f32; shape.elem_count()];
        if y.is_empty() {
            return Ok((y, shape));
        }
        let planes = y.par_chunks_mut(out_plane).zip(x.par_chunks(h * w)).with_min_len(min_chunks(out_plane));
        planes.for_each(|(dst, src)| match self {
            Resample::Up => {
                for (r, row) in dst.chunks_exact_mut(2 * w).enumerate() {
                    for (pair, &v) in row.chunks_exact_mut(2).zip(&src[r / 2 * w..]) {
                        pair.fill(v);
                    }
                }
            }
            Resample::Down => {
                for (r, row) in dst.chunks_exact_mut(w / 2).enumerate() {
                    let (top, bottom) = (&src[2 * r * w..][..w], &src[(2 * r + 1) * w..][..w]);
                    for ((d, t), b) in row.iter_mut().zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2)) {
                        *d = t[0] + t[1] + b[0] + b[1];
                    }
                }
            }
        });
        Ok((y, shape))
    }
}
