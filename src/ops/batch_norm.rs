//! Training-mode BatchNorm on the CPU as one candle op with an analytical
//! backward, fused with the LeakyReLU (or ReLU) that follows it in every
//! DCGAN block.
//!
//! Why: written with candle ops, a BatchNorm over (N, C, H, W) copies `x`
//! to (C, N*H*W) to reduce per channel, then runs a chain of reductions and
//! broadcasts (mean, subtract, square, mean, scale, shift), each a full pass
//! over the activations, and autograd walks all of them back. In a DCGAN step
//! that was ~15% of the time. Here the statistics take one pass (per-channel
//! sums straight off the (N, C, H, W) planes), the output one more, and the
//! backward two. The activation rides along: the forward writes
//! `leaky(bn(x))` in the same pass, and the backward masks `dy` by the
//! sign of `bn(x)`, recomputed from `x` with the forward's own scale and
//! shift, inside its two passes. A separate LeakyReLU cost a pass each
//! way, an activation-sized tensor, and candle's zeroing and adding of one
//! more gradient.
//!
//! On CUDA the same formulas, the activation too, run as kernels
//! (`src/ops/kernels.cu`): the statistics (one block per channel), the
//! normalization, the parameter gradients and the input gradient, the
//! sums outside the autograd graph: two kernels a pass where candle's
//! reductions and elementwise ops took ~45, each with a full-size add in
//! the backward.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, Var};
use rayon::prelude::*;
use wide::f32x8;

use super::activation::{leaky, leaky_grad};
use super::{fast, par_chunked, planes, shuffle, slice, tracked};

/// What a fused training pass returns: the output and the batch statistics
/// the caller needs for its running averages.
pub struct BatchNormTrain {
    /// The normalized, scaled and shifted `x`.
    pub y: Tensor,
    /// Per-channel batch mean (C).
    pub mean: Tensor,
    /// Per-channel biased batch variance (C), as the normalization used it.
    pub var: Tensor,
    /// Values per channel the statistics are over (N H W of the
    /// normalized tensor): `y` may be a later layer's output
    /// ([`super::conv_bn`]'s chains).
    pub count: usize,
}

/// BatchNorm of `x` (N, C, H, W) with batch statistics, `gamma` and `beta`
/// (C), then LeakyReLU with `slope` (1 for none): the fused op on the CPU
/// fast path, its kernels on CUDA, `None` elsewhere (the caller then uses
/// candle ops).
pub fn train(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64, slope: f64) -> Result<Option<BatchNormTrain>> {
    #[cfg(feature = "cuda")]
    if super::fast_cuda(&[x, gamma, beta]) {
        return on_cuda::train(x, gamma, beta, eps, slope).map(Some);
    }
    on_cpu(x, (gamma, beta), (eps, slope), false)
}

/// [`train`] of `pixel_shuffle(z)` for `z` (N, 4C, H, W), as one op on the
/// CPU fast path; `None` elsewhere (the caller then shuffles first).
///
/// Why: a channel's statistics over the shuffled plane are those over its
/// four input planes, which lie side by side, so the op normalizes `z` in
/// place of the shuffled tensor, writing its output shuffled in the same
/// pass, and its backward unshuffles `dy` first. The shuffled tensor is
/// then no node of the graph: candle no longer zeroes and adds its
/// gradient, a full tensor each way per pixel-shuffle layer.
pub fn train_shuffled(
    z: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    slope: f64,
) -> Result<Option<BatchNormTrain>> {
    on_cpu(z, (gamma, beta), (eps, slope), true)
}

/// [`train`] (of the shuffle of `x` when `shuffled`) by the CPU op, if
/// the fast ops apply.
fn on_cpu(
    x: &Tensor,
    (gamma, beta): (&Tensor, &Tensor),
    (eps, slope): (f64, f64),
    shuffled: bool,
) -> Result<Option<BatchNormTrain>> {
    if !fast(&[x, gamma, beta]) {
        return Ok(None);
    }
    let op = BatchNorm::new(eps, slope, shuffled);
    let stats = Arc::clone(&op.stats);
    let y = x.contiguous()?.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    with_statistics(y, &stats).map(Some)
}

/// `y` with the batch statistics its forward pass left in `stats`.
pub(super) fn with_statistics(y: Tensor, stats: &OnceLock<Stats>) -> Result<BatchNormTrain> {
    let Some(s) = stats.get() else { candle_core::bail!("batch norm: the forward pass left no statistics") };
    let c = s.mean.len();
    let mean = Tensor::from_slice(&s.mean, c, y.device())?;
    let var = Tensor::from_slice(&s.var, c, y.device())?;
    Ok(BatchNormTrain { y, mean, var, count: s.count })
}

/// Per-channel statistics of one forward pass, kept for the backward, and
/// the normalization they gave: `bn(x) = x * scale + shift`.
#[derive(Clone)]
pub(super) struct Stats {
    mean: Vec<f32>,
    var: Vec<f32>,
    scale: Vec<f32>,
    shift: Vec<f32>,
    /// Values per channel.
    count: usize,
}

/// How many values a channel's f32 lanes sum before they are added into
/// the f64 totals: as many as one 64x64 plane, the most they summed when
/// each plane was flushed on its own.
const FLUSH: usize = 4096;

/// Images per job of [`channel_sums`]: a split fixed whatever the thread
/// count, so that the sums, added job by job in order, are too.
const SUM_IMAGES: usize = 4;

/// Two sums for each channel over the planes of `a` and `b` (N, C, HW
/// each), the terms made by `terms(channel, a, b)` from eight values of
/// each at a time: per channel, f32 lanes added into f64 totals after at
/// most [`FLUSH`] values (after each plane where one is larger); the last
/// few values of each plane go through `terms` one by one, in lane 0.
///
/// Why image by image: summed channel by channel, each channel's planes
/// lie C·HW values apart, 32 KiB for a 128-channel 8x8 layer; the
/// prefetchers do not follow such strides across pages, and the backward's
/// sums over `x`, written long before, ran at 4.5 GB/s (0.92 ms for
/// 64 x 128 x 8 x 8, against 0.28 for the input-gradient pass that reads
/// both in order; BENCHMARKS.md, 2026-12-03). Why `wide`'s vectors:
/// written over `[f32; 8]` lanes, LLVM paired the two sums of each lane
/// instead and left most of the loop scalar. Why lanes that outlive a
/// plane: a 4x4 or 8x8 plane (most of a 32 px network's) is two or eight
/// vectors, and adding the lanes into f64 after each took longer than
/// summing them.
fn channel_sums(
    (a, b): (&[f32], &[f32]),
    (n, c, hw): (usize, usize, usize),
    terms: impl Fn(usize, f32x8, f32x8) -> (f32x8, f32x8) + Sync,
) -> Vec<(f64, f64)> {
    assert!(a.len() == n * c * hw && b.len() == a.len(), "batch norm: sums over {} and {} values", a.len(), b.len());
    if a.is_empty() {
        return vec![(0.0, 0.0); c];
    }
    let wide = |v: f32x8| v.to_array().iter().map(|&x| f64::from(x)).sum::<f64>();
    let flush_every = (FLUSH / hw.max(1)).max(1);
    let jobs: Vec<Vec<(f64, f64)>> = (0..n.div_ceil(SUM_IMAGES))
        .into_par_iter()
        .map(|job| {
            let mut lanes = vec![(f32x8::ZERO, f32x8::ZERO); c];
            let mut totals = vec![(0f64, 0f64); c];
            let flush = |lanes: &mut [(f32x8, f32x8)], totals: &mut [(f64, f64)]| {
                for ((ls, lt), (s, t)) in lanes.iter_mut().zip(totals.iter_mut()) {
                    (*s, *t) = (*s + wide(*ls), *t + wide(*lt));
                    (*ls, *lt) = (f32x8::ZERO, f32x8::ZERO);
                }
            };
            let images = job * SUM_IMAGES..((job + 1) * SUM_IMAGES).min(n);
            for (k, i) in images.enumerate() {
                let planes = a[i * c * hw..][..c * hw].chunks_exact(hw).zip(b[i * c * hw..][..c * hw].chunks_exact(hw));
                for (ci, ((pa, pb), (lane, total))) in planes.zip(lanes.iter_mut().zip(totals.iter_mut())).enumerate() {
                    let (ac, bc) = (pa.chunks_exact(8), pb.chunks_exact(8));
                    let (ar, br) = (ac.remainder(), bc.remainder());
                    for (a, b) in ac.zip(bc) {
                        let eight = |v: &[f32]| f32x8::new(v.try_into().expect("chunks of eight"));
                        let (ds, dt) = terms(ci, eight(a), eight(b));
                        *lane = (lane.0 + ds, lane.1 + dt);
                    }
                    for (&a, &b) in ar.iter().zip(br) {
                        let (ds, dt) = terms(ci, f32x8::splat(a), f32x8::splat(b));
                        *total = (total.0 + f64::from(ds.to_array()[0]), total.1 + f64::from(dt.to_array()[0]));
                    }
                }
                if (k + 1) % flush_every == 0 {
                    flush(&mut lanes, &mut totals);
                }
            }
            flush(&mut lanes, &mut totals);
            totals
        })
        .collect();
    // Job by job in order: the same sums on any number of threads.
    let mut sums = vec![(0f64, 0f64); c];
    for job in jobs {
        sums.iter_mut().zip(job).for_each(|(s, (a, b))| *s = (s.0 + a, s.1 + b));
    }
    sums
}

/// Per channel of `x` (N, C, HW), the value it is shifted by (its first
/// in image 0) and the sums of `v - shift` and of its square. Shifting by
/// a value of the same channel keeps the one-pass variance free of
/// cancellation when the mean is large.
fn shifted_sums(x: &[f32], (n, c, hw): (usize, usize, usize)) -> (Vec<f32>, Vec<(f64, f64)>) {
    let shifts: Vec<f32> = (0..c).map(|ci| x.get(ci * hw).copied().unwrap_or(0.0)).collect();
    let sums = channel_sums((x, x), (n, c, hw), |ci, v, _| {
        let d = v - f32x8::splat(shifts[ci]);
        (d, d * d)
    });
    (shifts, sums)
}

/// One channel's view of a forward pass, enough to redo its activation's
/// gradient mask: the mean, and `(scale, shift, slope)` of
/// `leaky(x * scale + shift, slope)`.
#[derive(Clone, Copy)]
struct Channel {
    mean: f32,
    act: (f32, f32, f32),
}

impl Channel {
    /// `dy` through the activation at `x`: the gradient `bn(x)` receives.
    #[inline(always)]
    fn masked(self, dy: f32, x: f32) -> f32 {
        let (a, b, s) = self.act;
        leaky_grad(x * a + b, dy, s)
    }

    /// [`Channel::masked`], eight values at a time.
    #[inline(always)]
    fn masked8(self, dy: f32x8, x: f32x8) -> f32x8 {
        let (a, b, s) = self.act;
        let z = x * f32x8::splat(a) + f32x8::splat(b);
        dy * z.simd_gt(f32x8::ZERO).bitselect(f32x8::ONE, f32x8::splat(s))
    }
}

/// Per channel of `(dy, x)` (N, C, HW each), the sums of `g` and of `g
/// * (x - mean)`, where `g` is `dy` masked by the activation.
fn grad_sums(
    (dy, x): (&[f32], &[f32]),
    dims: (usize, usize, usize),
    channel: impl Fn(usize) -> Channel + Sync,
) -> Vec<(f64, f64)> {
    channel_sums((dy, x), dims, |ci, d, x| {
        let ch = channel(ci);
        let g = ch.masked8(d, x);
        (g, g * (x - f32x8::splat(ch.mean)))
    })
}

/// `y = leaky((x - mean) / sqrt(var + eps) * gamma + beta, slope)` with
/// batch statistics.
pub(super) struct BatchNorm {
    eps: f64,
    /// The activation's slope; 1 is none (the identity).
    slope: f32,
    /// Whether the input is (N, 4C, H, W) and the output its pixel
    /// shuffle, normalized ([`train_shuffled`]).
    shuffled: bool,
    /// Filled by the forward pass: read by [`train`] and by the backward.
    pub(super) stats: Arc<OnceLock<Stats>>,
}

impl BatchNorm {
    /// With `slope` 1 for no activation; of the pixel shuffle of the input
    /// when `shuffled`.
    pub(super) fn new(eps: f64, slope: f64, shuffled: bool) -> Self {
        Self { eps, slope: slope as f32, shuffled, stats: Arc::default() }
    }

    /// The output for `x` laid out as `l1` (shuffled where `self.shuffled`),
    /// and its shape; the statistics go into `self.stats`.
    pub(super) fn normalize(&self, x: &[f32], l1: &Layout, gamma: &[f32], beta: &[f32]) -> Result<(Vec<f32>, Shape)> {
        // Shuffled, channel c's values are input planes 4c..4c + 4: the
        // input read as (N, C, 4H, W).
        let (n, c4, h, w) = l1.shape().dims4()?;
        let x_layout = if self.shuffled {
            if c4 % 4 != 0 {
                candle_core::bail!("batch norm of a pixel shuffle: {c4} channels are not a multiple of 4");
            }
            Layout::contiguous((n, c4 / 4, 4 * h, w))
        } else {
            l1.clone()
        };
        let (n, c, hw) = planes(&x_layout, &Layout::contiguous(gamma.len()), "batch norm")?;
        if beta.len() != c {
            candle_core::bail!("batch norm: {c} channels but {} shifts", beta.len());
        }
        let count = (n * hw) as f64;
        let (shifts, sums) = shifted_sums(x, (n, c, hw));
        let (mean, var): (Vec<f32>, Vec<f32>) = sums
            .iter()
            .zip(&shifts)
            .map(|(&(s, q), &shift)| {
                let m = s / count;
                ((f64::from(shift) + m) as f32, (q / count - m * m).max(0.0) as f32)
            })
            .unzip();
        // Same order of operations as the candle formulation in `Norm::forward`.
        let scale: Vec<f32> = (0..c).map(|ci| gamma[ci] / (var[ci] + self.eps as f32).sqrt()).collect();
        let shift: Vec<f32> = (0..c).map(|ci| beta[ci] - mean[ci] * scale[ci]).collect();
        // Plane j of the output, channel j % C, in the pass that shuffles
        // or one chunk per plane.
        let bn = |j: usize| {
            let (a, b, s) = (scale[j % c], shift[j % c], self.slope);
            move |v: f32| leaky(v * a + b, s)
        };
        let (y, shape) = if self.shuffled {
            shuffle::up_mapped(x, (n, c4, h, w), bn)?
        } else {
            (par_chunked(x.len(), hw, |j, r| x[r].iter().copied().map(bn(j))), Shape::from(l1.dims()))
        };
        // The op runs once per `apply_op3`, so the cell is always empty here.
        let _ = self.stats.set(Stats { mean, var, scale, shift, count: n * hw });
        Ok((y, shape))
    }

    /// The gradient of the input `x` (whether or not it is tracked) and
    /// those of gamma and beta, from the output's `dy`.
    pub(super) fn grads(&self, x: &Tensor, gamma: &Tensor, dy: &Tensor) -> Result<(Tensor, Vec<f32>, Vec<f32>)> {
        let Some(s) = self.stats.get() else { candle_core::bail!("batch norm: backward before forward") };
        let sums = Arc::new(OnceLock::new());
        let op = BatchNormGrad { eps: self.eps, slope: self.slope, stats: s.clone(), sums: Arc::clone(&sums) };
        let dx = if self.shuffled {
            // The unshuffled gradient, and both read as (N, C, 4H, W).
            let (n, c4, h, w) = x.dims4()?;
            let view = (n, c4 / 4, 4 * h, w);
            let dy = shuffle::pixel_unshuffle(dy)?.reshape(view)?;
            x.reshape(view)?.apply_op3(&dy, gamma, op)?.reshape((n, c4, h, w))?
        } else {
            x.apply_op3(&dy.contiguous()?, gamma, op)?
        };
        let Some((dgamma, dbeta)) = sums.get() else { candle_core::bail!("batch norm: no parameter gradients") };
        Ok((dx, dgamma.clone(), dbeta.clone()))
    }
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
        let _timer = super::profile::Timer::start(self.name(), &[l1, l2, l3]);
        let (x, gamma, beta) =
            (slice(s1, l1, "batch norm")?, slice(s2, l2, "batch norm")?, slice(s3, l3, "batch norm")?);
        let (y, shape) = self.normalize(x, l1, gamma, beta)?;
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dgamma, dbeta) = self.grads(x, gamma, dy)?;
        let dgamma = tracked(gamma, || Tensor::from_vec(dgamma, gamma.dims(), x.device()))?;
        let dbeta = tracked(beta, || Tensor::from_vec(dbeta, beta.dims(), x.device()))?;
        Ok((tracked(x, || Ok(dx))?, dgamma, dbeta))
    }
}

/// The input gradient of [`BatchNorm`], with M = N*H*W, xhat the
/// normalized input and g = dy masked by the activation's gradient:
/// `dx = gamma / sqrt(var + eps) * (g - sum(g) / M - xhat * sum(g * xhat) / M)`.
/// The two sums are also the gradients of beta and gamma; they are left in
/// `sums` so one pass yields all three.
struct BatchNormGrad {
    eps: f64,
    slope: f32,
    stats: Stats,
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
        let _timer = super::profile::Timer::start(self.name(), &[l1, l2, l3]);
        let (x, dy, gamma) = (slice(s1, l1, "batch norm")?, slice(s2, l2, "batch norm")?, slice(s3, l3, "batch norm")?);
        let (n, c, hw) = planes(l1, l3, "batch norm grad")?;
        if l2.dims() != l1.dims() {
            candle_core::bail!("batch norm grad: dy {:?} does not match x {:?}", l2.dims(), l1.dims());
        }
        let count = (n * hw) as f64;
        let st = &self.stats;
        let inv: Vec<f32> = st.var.iter().map(|v| 1.0 / (v + self.eps as f32).sqrt()).collect();
        let channel = |ci: usize| Channel { mean: st.mean[ci], act: (st.scale[ci], st.shift[ci], self.slope) };
        let (dgamma, dbeta): (Vec<f32>, Vec<f32>) = grad_sums((dy, x), (n, c, hw), channel)
            .iter()
            .zip(&inv)
            .map(|(&(s, p), &inv)| ((p * f64::from(inv)) as f32, s as f32))
            .unzip();
        // dx = a * g + b * (x - mean) + d per channel.
        let coef: Vec<(f32, f32, f32)> = (0..c)
            .map(|ci| {
                let a = gamma[ci] * inv[ci];
                let b = -a * inv[ci] * dgamma[ci] / count as f32;
                (a, b, -a * dbeta[ci] / count as f32)
            })
            .collect();
        let dx = par_chunked(x.len(), hw, |j, r| {
            let ((a, b, d), ch) = (coef[j % c], channel(j % c));
            x[r.clone()].iter().zip(&dy[r]).map(move |(&xv, &g)| a * ch.masked(g, xv) + b * (xv - ch.mean) + d)
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
        let mask = if self.slope == 1.0 {
            None
        } else {
            let per_channel = |v: &[f32]| Tensor::from_slice(v, v.len(), x.device());
            let (scale, shift) = (per_channel(&self.stats.scale)?, per_channel(&self.stats.shift)?);
            Some(mask(x, &scale, &shift, f64::from(self.slope))?)
        };
        second_order(self.eps, x, dy, gamma, g, mask.as_ref())
    }
}

/// The activation's gradient at `x` (N, C, H, W) as a constant tensor: 1
/// where `bn(x) = x * scale + shift` (per channel) is positive, `slope`
/// elsewhere.
fn mask(x: &Tensor, scale: &Tensor, shift: &Tensor, slope: f64) -> Result<Tensor> {
    let per_channel = |t: &Tensor| t.reshape((1, (), 1, 1));
    let z = x.detach().broadcast_mul(&per_channel(scale)?)?.broadcast_add(&per_channel(shift)?)?;
    z.gt(0.0)?.to_dtype(DType::F32)?.affine(1.0 - slope, slope)
}

/// The backward of BatchNorm's input gradient, second order, needed only by
/// the gradient penalty when D has BatchNorm: the gradient formula rebuilt
/// from candle ops on detached copies and differentiated by autograd, `dy`
/// first multiplied by the activation's constant `mask` where there is one.
/// Slow, and rare.
fn second_order(
    eps: f64,
    x: &Tensor,
    dy: &Tensor,
    gamma: &Tensor,
    g: &Tensor,
    mask: Option<&Tensor>,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let (xv, dyv, gv) =
        (Var::from_tensor(&x.detach())?, Var::from_tensor(&dy.detach())?, Var::from_tensor(&gamma.detach())?);
    let mean_c = |t: &Tensor| t.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3);
    let x = xv.as_tensor();
    let dy = &match mask {
        Some(m) => (dyv.as_tensor() * m)?,
        None => dyv.as_tensor().clone(),
    };
    let xc = x.broadcast_sub(&mean_c(x)?)?;
    let inv = (mean_c(&xc.sqr()?)? + eps)?.sqrt()?.recip()?;
    let xhat = xc.broadcast_mul(&inv)?;
    let inner = dy.broadcast_sub(&mean_c(dy)?)?.sub(&xhat.broadcast_mul(&mean_c(&(dy * &xhat)?)?)?)?;
    let dx = inner.broadcast_mul(&inv)?.broadcast_mul(&gv.as_tensor().reshape((1, (), 1, 1))?)?;
    let grads = (dx * g.detach())?.sum_all()?.backward()?;
    Ok((grads.get(x).cloned(), grads.get(dyv.as_tensor()).cloned(), grads.get(gv.as_tensor()).cloned()))
}

/// The CUDA op: the statistics and parameter gradients from our
/// per-channel reduction kernels, outside the autograd graph; the
/// normalization and its input gradient (with the activation's mask) from
/// the elementwise ones.
#[cfg(feature = "cuda")]
mod on_cuda {
    use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
    use candle_core::{CpuStorage, CudaStorage, CustomOp3, Layout, Result, Shape, Tensor};

    use super::{BatchNormTrain, mask, planes, second_order, tracked};
    use crate::ops::cuda::{Kernel, channel_reduce, count, output, storage, view, with_views};

    /// The CUDA pass: the statistics in one kernel (two passes over each
    /// channel, as the CPU's shifted sums, so a large mean does not cancel
    /// the variance away), then the normalization kernel.
    pub(super) fn train(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64, slope: f64) -> Result<BatchNormTrain> {
        let (n, _, h, w) = x.dims4()?;
        let x = x.contiguous()?;
        let stats = channel_reduce("ganscope_channel_stats_f32", &x, &[], 2, &[])?;
        let (mean, var) = (stats.get(0)?, stats.get(1)?);
        let op = BatchNormCuda { eps, slope, per_channel: vec![mean.clone(), var.clone()] };
        let y = x.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
        Ok(BatchNormTrain { y, mean, var, count: n * h * w })
    }

    /// One kernel of `kernels.cu` over three (N, C, H, W) or (C) arguments
    /// and per-channel vectors computed beforehand: the normalization and
    /// activation (x, gamma, beta; mean, var) or its input gradient (x, dy,
    /// gamma; beta, mean, var, dgamma, dbeta), told apart by the vector
    /// count.
    struct BatchNormCuda {
        eps: f64,
        slope: f64,
        per_channel: Vec<Tensor>,
    }

    impl BatchNormCuda {
        fn is_grad(&self) -> bool {
            self.per_channel.len() == 5
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
            // x first in both passes; gamma and beta (C), or dy (N, C, H, W) and gamma.
            let (n, c, hw) = if self.is_grad() {
                if l2.dims() != l1.dims() {
                    candle_core::bail!("{what}: dy {:?} does not match x {:?}", l2.dims(), l1.dims());
                }
                planes(l1, l3, what)?
            } else {
                planes(l1, l3, what)?;
                planes(l1, l2, what)?
            };
            let (a1, a2, a3) = (view(s1, l1, what)?, view(s2, l2, what)?, view(s3, l3, what)?);
            let total = count(l1.shape().elem_count(), what)?;
            let (c, hw, eps, slope, m) = (c as u32, hw as u32, self.eps as f32, self.slope as f32, (n * hw) as f32);
            let name = if self.is_grad() { "ganscope_bn_grad_f32" } else { "ganscope_bn_apply_f32" };
            let y = with_views(&self.per_channel.iter().collect::<Vec<_>>(), |v| {
                let (k, y) = (Kernel::new(&s1.device, name, total)?, output(&s1.device, total)?);
                let mut args = k.args();
                args.arg(&a1).arg(&a2).arg(&a3);
                v.iter().for_each(|v| {
                    args.arg(v);
                });
                args.arg(&y).arg(&total).arg(&c).arg(&hw).arg(&eps).arg(&slope);
                if self.is_grad() {
                    args.arg(&m);
                }
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
            let (eps, slope) = (self.eps, self.slope);
            if self.is_grad() {
                let [beta, mean, var, ..] = &self.per_channel[..] else { unreachable!("is_grad: five vectors") };
                let scale = (a3 * (var + eps)?.sqrt()?.recip()?)?;
                let shift = (beta - (mean * &scale)?)?;
                let mask = if slope == 1.0 { None } else { Some(mask(x, &scale, &shift, slope)?) };
                return second_order(eps, x, a2, a3, g, mask.as_ref());
            }
            let (gamma, beta, dy) = (a2, a3, g.contiguous()?);
            let (mean, var) = (&self.per_channel[0], &self.per_channel[1]);
            let sums = channel_reduce(
                "ganscope_bn_param_grads_f32",
                x,
                &[&dy, gamma, beta, mean, var],
                2,
                &[eps as f32, slope as f32],
            )?;
            let (dgamma, dbeta) = (sums.get(0)?, sums.get(1)?);
            let per_channel = vec![beta.clone(), mean.clone(), var.clone(), dgamma.clone(), dbeta.clone()];
            let dx = tracked(x, || x.apply_op3(&dy, gamma, BatchNormCuda { eps, slope, per_channel }))?;
            Ok((dx, tracked(gamma, || Ok(dgamma))?, tracked(beta, || Ok(dbeta))?))
        }
    }
}
