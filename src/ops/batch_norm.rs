//! Training-mode BatchNorm on the CPU as one candle op with an analytical
//! backward.
//!
//! Why: written with candle ops, a BatchNorm over (N, C, H, W) copies `x`
//! to (C, N*H*W) to reduce per channel, then runs a chain of reductions and
//! broadcasts (mean, subtract, square, mean, scale, shift), each a full pass
//! over the activations, and autograd walks all of them back. In a DCGAN step
//! that was ~15% of the time. Here the statistics take one pass (per-channel
//! sums straight off the (N, C, H, W) planes), the output one more, and the
//! backward two.
//!
//! On CUDA the same formulas run as two kernels (`src/ops/kernels.cu`), the
//! normalization and the input gradient, with the per-channel sums taken
//! by candle's reductions outside the autograd graph: 2 GPU kernels and
//! ~10 small reductions per pass instead of ~45 kernels, a full-size add
//! for each of them in the backward.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, Var};
use rayon::prelude::*;

use super::{fast, par_chunked, planes, slice, tracked};

/// What a fused training pass returns: the output and the batch statistics
/// the caller needs for its running averages.
pub struct BatchNormTrain {
    /// The normalized, scaled and shifted `x`.
    pub y: Tensor,
    /// Per-channel batch mean (C).
    pub mean: Tensor,
    /// Per-channel biased batch variance (C), as the normalization used it.
    pub var: Tensor,
}

/// BatchNorm of `x` (N, C, H, W) with batch statistics, `gamma` and `beta`
/// (C): the fused op on the CPU fast path and on CUDA, `None` elsewhere
/// (the caller then uses candle ops).
pub fn train(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Option<BatchNormTrain>> {
    #[cfg(feature = "cuda")]
    if super::fast_cuda(&[x, gamma, beta]) {
        return on_cuda::train(x, gamma, beta, eps).map(Some);
    }
    if !fast(&[x, gamma, beta]) {
        return Ok(None);
    }
    let stats = Arc::new(OnceLock::new());
    let op = BatchNorm { eps, stats: Arc::clone(&stats) };
    let y = x.contiguous()?.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let Some(s) = stats.get() else { candle_core::bail!("batch norm: the forward pass left no statistics") };
    let c = s.mean.len();
    let mean = Tensor::from_slice(&s.mean, c, x.device())?;
    let var = Tensor::from_slice(&s.var, c, x.device())?;
    Ok(Some(BatchNormTrain { y, mean, var }))
}

/// Per-channel statistics of one forward pass, kept for the backward.
struct Stats {
    mean: Vec<f32>,
    var: Vec<f32>,
}

/// Sums of `v - shift` and of its square. Shifting by a value of the same
/// channel keeps the one-pass variance free of cancellation when the mean is
/// large; eight f32 lanes let the loop vectorize, and each plane's sums are
/// added in f64.
fn shifted_sums(v: &[f32], shift: f32) -> (f64, f64) {
    let (mut s, mut q) = ([0f32; 8], [0f32; 8]);
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for ch in chunks {
        for l in 0..8 {
            let d = ch[l] - shift;
            s[l] += d;
            q[l] += d * d;
        }
    }
    let (mut s, mut q) = (s.iter().map(|&a| f64::from(a)).sum(), q.iter().map(|&a| f64::from(a)).sum::<f64>());
    for &a in rest {
        let d = f64::from(a - shift);
        s += d;
        q += d * d;
    }
    (s, q)
}

/// Sums of `dy` and of `dy * (x - mean)` over one plane, as in [`shifted_sums`].
fn grad_sums(dy: &[f32], x: &[f32], mean: f32) -> (f64, f64) {
    let (mut s, mut p) = ([0f32; 8], [0f32; 8]);
    let (dc, xc) = (dy.chunks_exact(8), x.chunks_exact(8));
    let (dr, xr) = (dc.remainder(), xc.remainder());
    for (d, x) in dc.zip(xc) {
        for l in 0..8 {
            s[l] += d[l];
            p[l] += d[l] * (x[l] - mean);
        }
    }
    let (mut s, mut p) = (s.iter().map(|&a| f64::from(a)).sum(), p.iter().map(|&a| f64::from(a)).sum::<f64>());
    for (&d, &x) in dr.iter().zip(xr) {
        s += f64::from(d);
        p += f64::from(d * (x - mean));
    }
    (s, p)
}

/// `y = (x - mean) / sqrt(var + eps) * gamma + beta` with batch statistics.
struct BatchNorm {
    eps: f64,
    /// Filled by the forward pass: read by [`train`] and by the backward.
    stats: Arc<OnceLock<Stats>>,
}

impl CustomOp3 for BatchNorm {
    fn name(&self) -> &'static str {
        "ganscope-batch-norm"
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
        let (x, gamma, beta) =
            (slice(s1, l1, "batch norm")?, slice(s2, l2, "batch norm")?, slice(s3, l3, "batch norm")?);
        let ((n, c, hw), _) = (planes(l1, l2, "batch norm")?, planes(l1, l3, "batch norm")?);
        let count = (n * hw) as f64;
        let (mean, var): (Vec<f32>, Vec<f32>) = (0..c)
            .into_par_iter()
            .map(|ci| {
                let shift = x[ci * hw..].first().copied().unwrap_or(0.0);
                let (s, q) = (0..n)
                    .map(|i| shifted_sums(&x[(i * c + ci) * hw..][..hw], shift))
                    .fold((0.0, 0.0), |(a, b), (s, q)| (a + s, b + q));
                let m = s / count;
                (f64::from(shift) + m, (q / count - m * m).max(0.0))
            })
            .map(|(m, v)| (m as f32, v as f32))
            .unzip();
        // Same order of operations as the candle formulation in `Norm::forward`.
        let scale: Vec<f32> = (0..c).map(|ci| gamma[ci] / (var[ci] + self.eps as f32).sqrt()).collect();
        let shift: Vec<f32> = (0..c).map(|ci| beta[ci] - mean[ci] * scale[ci]).collect();
        // One chunk per (image, channel) plane.
        let y = par_chunked(x.len(), hw, |j, r| {
            let (a, b) = (scale[j % c], shift[j % c]);
            x[r].iter().map(move |v| v * a + b)
        });
        // The op runs once per `apply_op3`, so the cell is always empty here.
        let _ = self.stats.set(Stats { mean, var });
        Ok((CpuStorage::F32(y), Shape::from(l1.dims())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(s) = self.stats.get() else { candle_core::bail!("batch norm: backward before forward") };
        let sums = Arc::new(OnceLock::new());
        let op = BatchNormGrad { eps: self.eps, mean: s.mean.clone(), var: s.var.clone(), sums: Arc::clone(&sums) };
        let dx = x.apply_op3(&dy.contiguous()?, gamma, op)?;
        let Some((dgamma, dbeta)) = sums.get() else { candle_core::bail!("batch norm: no parameter gradients") };
        let c = dgamma.len();
        let dgamma = tracked(gamma, || Tensor::from_slice(dgamma, c, x.device()))?;
        let dbeta = tracked(beta, || Tensor::from_slice(dbeta, c, x.device()))?;
        Ok((tracked(x, || Ok(dx))?, dgamma, dbeta))
    }
}

/// The input gradient of [`BatchNorm`], with M = N*H*W and xhat the
/// normalized input:
/// `dx = gamma / sqrt(var + eps) * (dy - sum(dy) / M - xhat * sum(dy * xhat) / M)`.
/// The two sums are also the gradients of beta and gamma; they are left in
/// `sums` so one pass yields all three.
struct BatchNormGrad {
    eps: f64,
    mean: Vec<f32>,
    var: Vec<f32>,
    /// (dgamma, dbeta), filled by the forward pass.
    sums: Arc<OnceLock<(Vec<f32>, Vec<f32>)>>,
}

impl CustomOp3 for BatchNormGrad {
    fn name(&self) -> &'static str {
        "ganscope-batch-norm-grad"
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
        let (x, dy, gamma) = (slice(s1, l1, "batch norm")?, slice(s2, l2, "batch norm")?, slice(s3, l3, "batch norm")?);
        let (n, c, hw) = planes(l1, l3, "batch norm grad")?;
        if l2.dims() != l1.dims() {
            candle_core::bail!("batch norm grad: dy {:?} does not match x {:?}", l2.dims(), l1.dims());
        }
        let count = (n * hw) as f64;
        let inv: Vec<f32> = self.var.iter().map(|v| 1.0 / (v + self.eps as f32).sqrt()).collect();
        let (dgamma, dbeta): (Vec<f32>, Vec<f32>) = (0..c)
            .into_par_iter()
            .map(|ci| {
                let (s, p) = (0..n)
                    .map(|i| {
                        let at = (i * c + ci) * hw;
                        grad_sums(&dy[at..][..hw], &x[at..][..hw], self.mean[ci])
                    })
                    .fold((0.0, 0.0), |(a, b), (s, p)| (a + s, b + p));
                ((p * f64::from(inv[ci])) as f32, s as f32)
            })
            .unzip();
        // dx = a * dy + b * (x - mean) + d per channel.
        let coef: Vec<(f32, f32, f32)> = (0..c)
            .map(|ci| {
                let a = gamma[ci] * inv[ci];
                let b = -a * inv[ci] * dgamma[ci] / count as f32;
                (a, b, -a * dbeta[ci] / count as f32)
            })
            .collect();
        let dx = par_chunked(x.len(), hw, |j, r| {
            let ((a, b, d), m) = (coef[j % c], self.mean[j % c]);
            x[r.clone()].iter().zip(&dy[r]).map(move |(&xv, &g)| a * g + b * (xv - m) + d)
        });
        let _ = self.sums.set((dgamma, dbeta));
        Ok((CpuStorage::F32(dx), Shape::from(l1.dims())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        dy: &Tensor,
        gamma: &Tensor,
        _: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        second_order(self.eps, x, dy, gamma, g)
    }
}

/// The backward of BatchNorm's input gradient, second order, needed only by
/// the gradient penalty when D has BatchNorm: the gradient formula rebuilt
/// from candle ops on detached copies and differentiated by autograd. Slow,
/// and rare.
fn second_order(
    eps: f64,
    x: &Tensor,
    dy: &Tensor,
    gamma: &Tensor,
    g: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let (xv, dyv, gv) =
        (Var::from_tensor(&x.detach())?, Var::from_tensor(&dy.detach())?, Var::from_tensor(&gamma.detach())?);
    let mean_c = |t: &Tensor| t.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3);
    let (x, dy) = (xv.as_tensor(), dyv.as_tensor());
    let xc = x.broadcast_sub(&mean_c(x)?)?;
    let inv = (mean_c(&xc.sqr()?)? + eps)?.sqrt()?.recip()?;
    let xhat = xc.broadcast_mul(&inv)?;
    let inner = dy.broadcast_sub(&mean_c(dy)?)?.sub(&xhat.broadcast_mul(&mean_c(&(dy * &xhat)?)?)?)?;
    let dx = inner.broadcast_mul(&inv)?.broadcast_mul(&gv.as_tensor().reshape((1, (), 1, 1))?)?;
    let grads = (dx * g.detach())?.sum_all()?.backward()?;
    Ok((grads.get(x).cloned(), grads.get(dy).cloned(), grads.get(gv.as_tensor()).cloned()))
}

/// The CUDA op, whose statistics and parameter gradients come from candle
/// reductions outside the autograd graph.
#[cfg(feature = "cuda")]
mod on_cuda {
    use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
    use candle_core::{CpuStorage, CudaStorage, CustomOp3, Layout, Result, Shape, Tensor};

    use super::{BatchNormTrain, planes, second_order, tracked};
    use crate::ops::cuda::{Kernel, count, output, storage, view, with_views};

    /// Sums of `t` (N, C, H, W) per channel: over H*W in one contiguous
    /// reduction, then over N.
    fn channel_sums(t: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = t.dims4()?;
        t.contiguous()?.reshape((n, c, h * w))?.sum(2)?.sum(0)
    }

    /// The CUDA pass: statistics from reductions of the detached input (two
    /// passes, as the CPU's shifted sums, so a large mean does not cancel
    /// the variance away), then the normalization kernel.
    pub(super) fn train(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<BatchNormTrain> {
        let (n, c, h, w) = x.dims4()?;
        let count = (n * h * w) as f64;
        let xd = x.detach();
        let mean = channel_sums(&xd)?.affine(1.0 / count, 0.0)?;
        let centered = xd.broadcast_sub(&mean.reshape((1, c, 1, 1))?)?;
        let var = channel_sums(&centered.sqr()?)?.affine(1.0 / count, 0.0)?;
        let op = BatchNormCuda { eps, per_channel: vec![mean.clone(), var.clone()] };
        let y = x.contiguous()?.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
        Ok(BatchNormTrain { y, mean, var })
    }

    /// One kernel of `kernels.cu` over three (N, C, H, W) or (C) arguments
    /// and per-channel vectors computed beforehand: the normalization
    /// (x, gamma, beta; mean, var) or its input gradient (x, dy, gamma;
    /// mean, var, dgamma, dbeta), told apart by the vector count.
    struct BatchNormCuda {
        eps: f64,
        per_channel: Vec<Tensor>,
    }

    impl BatchNormCuda {
        fn is_grad(&self) -> bool {
            self.per_channel.len() == 4
        }
    }

    impl CustomOp3 for BatchNormCuda {
        fn name(&self) -> &'static str {
            if self.is_grad() { "ganscope-batch-norm-grad-cuda" } else { "ganscope-batch-norm-cuda" }
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("{}: CUDA only", self.name())
        }

        fn cuda_fwd(
            &self,
            s1: &CudaStorage,
            l1: &Layout,
            s2: &CudaStorage,
            l2: &Layout,
            s3: &CudaStorage,
            l3: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            let what = self.name();
            // x and gamma in both passes; beta (C) or dy (N, C, H, W) second.
            let (n, c, hw) = planes(l1, l3, what)?;
            if self.is_grad() && l2.dims() != l1.dims() {
                candle_core::bail!("{what}: dy {:?} does not match x {:?}", l2.dims(), l1.dims());
            } else if !self.is_grad() {
                planes(l1, l2, what)?;
            }
            let (a1, a2, a3) = (view(s1, l1, what)?, view(s2, l2, what)?, view(s3, l3, what)?);
            let total = count(l1.shape().elem_count(), what)?;
            let (c, hw, eps, m) = (c as u32, hw as u32, self.eps as f32, (n * hw) as f32);
            let name = if self.is_grad() { "ganscope_bn_grad_f32" } else { "ganscope_bn_apply_f32" };
            let y = with_views(&self.per_channel.iter().collect::<Vec<_>>(), |v| {
                let (k, y) = (Kernel::new(&s1.device, name, total)?, output(&s1.device, total)?);
                let mut args = k.args();
                args.arg(&a1).arg(&a2).arg(&a3);
                v.iter().for_each(|v| {
                    args.arg(v);
                });
                args.arg(&y).arg(&total).arg(&c).arg(&hw).arg(&eps).arg(&m);
                k.launch(args)?;
                Ok(storage(y, &s1.device))
            })?;
            Ok((y, Shape::from(l1.dims())))
        }

        fn bwd(
            &self,
            x: &Tensor,
            a2: &Tensor,
            a3: &Tensor,
            _: &Tensor,
            g: &Tensor,
        ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
            if self.is_grad() {
                return second_order(self.eps, x, a2, a3, g);
            }
            let (gamma, beta, dy) = (a2, a3, g.contiguous()?);
            let (mean, var) = (&self.per_channel[0], &self.per_channel[1]);
            let inv = (var + self.eps)?.sqrt()?.recip()?;
            let dbeta = channel_sums(&dy)?;
            // sum(dy * xhat) = (sum(dy * x) - mean * sum(dy)) / sqrt(var + eps)
            let dgamma = ((channel_sums(&(&dy * x)?)? - (mean * &dbeta)?)? * inv)?;
            let per_channel = vec![mean.clone(), var.clone(), dgamma.clone(), dbeta.clone()];
            let dx = tracked(x, || x.apply_op3(&dy, gamma, BatchNormCuda { eps: self.eps, per_channel }))?;
            Ok((dx, tracked(gamma, || Ok(dgamma))?, tracked(beta, || Ok(dbeta))?))
        }
    }
}
