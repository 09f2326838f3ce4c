//! Pixel shuffle (depth to space, Shi et al. 2016) as one op (CPU and
//! CUDA), with its inverse as the backward.
//!
//! Why: with candle ops it is a reshape, a six-axis permute and a copy that
//! candle's generic strided copy walks index by index, 5-7% of the
//! pixel-shuffle generator's time; its gradient is another such copy, and
//! each of the three graph nodes gets its gradient zeroed and added. Here
//! each output row interleaves two input rows (on CUDA, a thread per output
//! value).

use std::mem::MaybeUninit;

use candle_core::{Result, Shape, Tensor};

use super::{LinearMap, MapOp, fast, min_chunks, par_written};

/// (N, 4C, H, W) -> (N, C, 2H, 2W), with `y[n, c, 2h + i, 2w + j] =
/// x[n, 4c + 2i + j, h, w]`.
pub fn pixel_shuffle(x: &Tensor) -> Result<Tensor> {
    let (n, c4, h, w) = x.dims4()?;
    if c4 % 4 != 0 {
        candle_core::bail!("pixel shuffle: {c4} channels are not a multiple of 4");
    }
    if !fast(&[x]) && !super::fast_cuda(&[x]) {
        let c = c4 / 4;
        return x.reshape((n, c, 2, 2, h, w))?.permute((0, 1, 4, 2, 5, 3))?.reshape((n, c, 2 * h, 2 * w));
    }
    x.contiguous()?.apply_op1(MapOp(Shuffle::Up))
}

/// (N, C, 2H, 2W) -> (N, 4C, H, W), the inverse of [`pixel_shuffle`] (its
/// backward), for f32 on the CPU or CUDA.
pub(super) fn pixel_unshuffle(y: &Tensor) -> Result<Tensor> {
    y.contiguous()?.apply_op1(MapOp(Shuffle::Down))
}

/// The values of [`pixel_shuffle`] of `x` (`dims` (N, 4C, H, W)) through
/// `map(plane)` for each output plane, and its shape.
pub(super) fn up_mapped<F: Fn(f32) -> f32>(
    x: &[f32],
    dims: (usize, usize, usize, usize),
    map: impl Fn(usize) -> F + Sync,
) -> Result<(Vec<f32>, Shape)> {
    Shuffle::Up.run_mapped(x, dims, map)
}

/// The shuffle and its inverse, each the other's backward.
#[derive(Debug, Clone, Copy)]
enum Shuffle {
    /// (N, 4C, H, W) -> (N, C, 2H, 2W).
    Up,
    /// (N, C, 2H, 2W) -> (N, 4C, H, W).
    Down,
}

impl LinearMap for Shuffle {
    fn name(self) -> &'static str {
        match self {
            Shuffle::Up => "ganscope-pixel-shuffle",
            Shuffle::Down => "ganscope-pixel-unshuffle",
        }
    }

    fn adjoint(self) -> Self {
        match self {
            Shuffle::Up => Shuffle::Down,
            Shuffle::Down => Shuffle::Up,
        }
    }

    /// The output of `x` (N, C, H, W).
    fn run(self, x: &[f32], dims: (usize, usize, usize, usize)) -> Result<(Vec<f32>, Shape)> {
        self.run_mapped(x, dims, |_| |v| v)
    }

    #[cfg(feature = "cuda")]
    fn run_cuda(
        self,
        dev: &candle_core::CudaDevice,
        x: &super::cuda::CudaView<'_, f32>,
        (n, c, h, w): (usize, usize, usize, usize),
    ) -> Result<(super::cuda::CudaSlice<f32>, Shape)> {
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;

        let shape = self.shape((n, c, h, w))?;
        let total = super::cuda::count(x.len(), self.name())?;
        // The small planes' sizes, and whether x has them.
        let ((hs, ws), up) = match self {
            Shuffle::Up => ((h, w), 1u32),
            Shuffle::Down => ((h / 2, w / 2), 0),
        };
        let (hs, ws) = (hs as u32, ws as u32);
        let mut y = super::cuda::output(dev, total)?;
        let k = super::cuda::Kernel::new(dev, "ganscope_shuffle_f32", total)?;
        let mut dst = y.slice_mut(..);
        let mut args = k.args();
        args.arg(x).arg(&mut dst).arg(&total).arg(&hs).arg(&ws).arg(&up);
        k.launch(args)?;
        Ok((y, shape))
    }
}

impl Shuffle {
    /// The output's shape for an input (N, C, H, W).
    fn shape(self, (n, c, h, w): (usize, usize, usize, usize)) -> Result<Shape> {
        Ok(match self {
            Shuffle::Up => Shape::from((n, c / 4, 2 * h, 2 * w)),
            Shuffle::Down if h % 2 == 0 && w % 2 == 0 => Shape::from((n, 4 * c, h / 2, w / 2)),
            Shuffle::Down => candle_core::bail!("pixel unshuffle: odd size {h}x{w}"),
        })
    }

    /// The output of `x` (N, C, H, W), each value of group `i` through
    /// `map(i)`: every output plane comes from four input planes (`Up`; a
    /// group is an output plane), or every input plane gives four (`Down`;
    /// a group is an input plane), so rayon splits the work by groups of
    /// four small planes.
    fn run_mapped<F: Fn(f32) -> f32>(
        self,
        x: &[f32],
        (n, c, h, w): (usize, usize, usize, usize),
        map: impl Fn(usize) -> F + Sync,
    ) -> Result<(Vec<f32>, Shape)> {
        let quad = if let Shuffle::Up = self { 4 * h * w } else { h * w };
        let shape = self.shape((n, c, h, w))?;
        if x.is_empty() {
            return Ok((Vec::new(), shape));
        }
        // SAFETY: `map_quad` sets every value of its group.
        let y = unsafe {
            par_written(x.len(), (quad, min_chunks(quad)), |i, dst| {
                let src = &x[i * quad..][..dst.len()];
                self.map_quad(src, dst, (h, w), map(i));
            })
        };
        Ok((y, shape))
    }

    /// One group of four planes: `src` (four input planes for `Up`, one
    /// for `Down`) into `dst`, every value of it set, through `f`.
    fn map_quad(self, src: &[f32], dst: &mut [MaybeUninit<f32>], (h, w): (usize, usize), f: impl Fn(f32) -> f32) {
        match self {
            Shuffle::Up => {
                // Output row 2h + i interleaves row h of input planes 2i and 2i + 1.
                for (r, row) in dst.chunks_exact_mut(2 * w).enumerate() {
                    let (even, odd) =
                        (&src[(r % 2 * 2) * h * w + r / 2 * w..], &src[(r % 2 * 2 + 1) * h * w + r / 2 * w..]);
                    for ((pair, &a), &b) in row.chunks_exact_mut(2).zip(even).zip(odd) {
                        pair[0].write(f(a));
                        pair[1].write(f(b));
                    }
                }
            }
            Shuffle::Down => {
                // Output planes 2i and 2i + 1 take the even and the odd
                // values of rows i, i + 2, ..., both in one pass (a
                // strided read per plane took 2-3x as long at 4x4 to 8x8
                // output pixels, inside training steps).
                let (ho, wo) = (h / 2, w / 2);
                for (i, pair) in dst.chunks_exact_mut(2 * ho * wo).enumerate() {
                    let (even, odd) = pair.split_at_mut(ho * wo);
                    let rows = even.chunks_exact_mut(wo).zip(odd.chunks_exact_mut(wo));
                    for (r, (even, odd)) in rows.enumerate() {
                        let line = &src[(2 * r + i) * w..][..w];
                        for ((e, o), v) in even.iter_mut().zip(odd).zip(line.chunks_exact(2)) {
                            e.write(f(v[0]));
                            o.write(f(v[1]));
                        }
                    }
                }
            }
        }
    }
}
