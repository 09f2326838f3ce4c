//! Per-channel maps of (N, C, H, W) activations: the bias gradient and
//! scale-and-shift, as CPU ops with their backward (the bias gradient on
//! CUDA too).
//!
//! Why: candle's `broadcast_add` backward sums the gradient over the batch
//! and spatial axes with candle's generic strided reduction, which walked
//! every element with index arithmetic: ~9% of a DCGAN training step. Here
//! the bias gradient (of the convolutions, which add their bias
//! themselves) is a contiguous sum per (image, channel) plane. Scale and
//! shift is inference-mode BatchNorm and the LeakyReLU after it in one
//! pass instead of candle's two broadcast ops and the activation's own.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::activation::{leaky, leaky_relu, leaky_relu_grad};
use super::{fast, min_chunks, par_chunked, planes, slice, tracked};

/// `leaky(x * scale + shift, slope)` with `scale` and `shift` (C)
/// broadcast over `x` (N, C, H, W); `slope` 1 is no activation.
pub fn scale_shift(x: &Tensor, scale: &Tensor, shift: &Tensor, slope: f64) -> Result<Tensor> {
    if !fast(&[x, scale, shift]) {
        let per_channel = |t: &Tensor| t.reshape((1, (), 1, 1));
        let y = x.broadcast_mul(&per_channel(scale)?)?.broadcast_add(&per_channel(shift)?)?;
        return leaky_relu(&y, slope);
    }
    x.contiguous()?.apply_op3(&scale.contiguous()?, &shift.contiguous()?, ScaleShift(slope as f32))
}

/// The sum of `v`: eight f32 lanes (so the loop vectorizes) added in f64.
fn lane_sum(v: &[f32]) -> f64 {
    let mut lanes = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest: f64 = chunks.remainder().iter().map(|&a| f64::from(a)).sum();
    for ch in chunks {
        lanes.iter_mut().zip(ch).for_each(|(s, &a)| *s += a);
    }
    lanes.iter().map(|&a| f64::from(a)).sum::<f64>() + rest
}

/// The bias gradient of (N, C, ...) activations: `g` summed to (C), on the
/// CPU or, as one kernel of `kernels.cu`, on CUDA.
pub(super) fn channel_sum(g: &Tensor) -> Result<Tensor> {
    g.contiguous()?.apply_op1(ChannelSum)
}

/// The bias gradient: (N, C, ...) summed to (C), each plane in f64 on the
/// CPU.
struct ChannelSum;

impl ChannelSum {
    /// (N, C, values per plane) of the argument.
    fn planes(l: &Layout) -> Result<(usize, usize, usize)> {
        match l.dims() {
            [n, c, rest @ ..] => Ok((*n, *c, rest.iter().product())),
            dims => candle_core::bail!("ganscope-channel-sum: expected (N, C, ...), got {dims:?}"),
        }
    }
}

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "ganscope-channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _timer = super::profile::Timer::start(self.name(), &[l]);
        let g = slice(s, l, "bias grad")?;
        let (_, c, hw) = Self::planes(l)?;
        let plane_sums: Vec<f64> =
            if hw == 0 { Vec::new() } else { g.par_chunks(hw).with_min_len(min_chunks(hw)).map(lane_sum).collect() };
        let mut sums = vec![0f64; c];
        for (i, s) in plane_sums.into_iter().enumerate() {
            sums[i % c] += s;
        }
        Ok((CpuStorage::F32(sums.into_iter().map(|s| s as f32).collect()), Shape::from(c)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        let (n, c, hw) = Self::planes(l)?;
        let g = super::cuda::view(s, l, self.name())?;
        let mut sums = super::cuda::output(&s.device, super::cuda::count(c, self.name())?)?;
        super::cuda::channel_sums_into(&s.device, &g, (n, c, hw), &mut sums.slice_mut(..))?;
        Ok((super::cuda::storage(sums, &s.device), Shape::from(c)))
    }

    /// Each element of the input fed its channel's sum once.
    fn bwd(&self, arg: &Tensor, _: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let mut per_channel = vec![1; arg.rank()];
        per_channel[1] = g.elem_count();
        Ok(Some(g.reshape(per_channel)?.broadcast_as(arg.shape())?.contiguous()?))
    }
}

/// The scale-and-shift op: x (N, C, H, W), scale (C), shift (C), and the
/// activation's slope.
struct ScaleShift(f32);

impl CustomOp3 for ScaleShift {
    fn name(&self) -> &'static str {
        "ganscope-scale-shift"
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
        let (x, a, b) = (slice(s1, l1, "scale")?, slice(s2, l2, "scale")?, slice(s3, l3, "shift")?);
        let ((_, c, hw), _) = (planes(l1, l2, "scale")?, planes(l1, l3, "shift")?);
        // One chunk per (image, channel) plane.
        let out = par_chunked(x.len(), hw, |p, r| {
            let (ac, bc, s) = (a[p % c], b[p % c], self.0);
            x[r].iter().map(move |&v| leaky(v * ac + bc, s))
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        shift: &Tensor,
        y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // Masked by the output, whose sign is that of `x * scale + shift`.
        let g = if self.0 == 1.0 { g.contiguous()? } else { leaky_relu_grad(y, g, self.0)? };
        let dx = tracked(x, || g.broadcast_mul(&scale.reshape((1, (), 1, 1))?))?;
        let dscale = tracked(scale, || channel_sum(&(&g * x)?))?;
        let dshift = tracked(shift, || channel_sum(&g))?;
        Ok((dx, dscale, dshift))
    }
}
