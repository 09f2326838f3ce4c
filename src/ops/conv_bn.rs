//! A convolution (or transposed convolution) with its bias, then the
//! training-mode BatchNorm and LeakyReLU after it, as one candle op: the
//! hidden layers of a DCGAN's discriminator and generator while training
//! on the CPU.
//!
//! Why: as two ops, the convolution's output is a node of candle's graph,
//! and candle's backward zeroes a tensor of its size and adds the
//! BatchNorm's input gradient into it before the convolution's backward
//! reads it: a memset and an add over an activation-sized tensor per layer
//! and pass, serial on the step's thread (candle's `GradStore::or_insert`).
//! Here the convolution's output stays inside the op, kept for the
//! backward, which hands the BatchNorm's input gradient straight to the
//! convolution's. The computation is the same as the two ops' (the same
//! kernels in the same order), so values and gradients match them bit for
//! bit. For the same reason a layer without a norm next to such a layer
//! joins it in one op (`Chain`): a discriminator's first layer before
//! its second, its head after its last, a generator's RGB layer after its
//! last hidden one.
//!
//! Not for a graph that is differentiated twice (the gradient penalty):
//! the kept output is a constant to candle, so the backward's own graph
//! would miss its dependence on the input and the weights. There the
//! layers run as two ops ([`twice_differentiable`]).

use std::cell::Cell;
use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp3, Device, Layout, Result, Shape, Tensor, Var};

use super::batch_norm::{BatchNorm, BatchNormTrain, Stats, with_statistics};
use super::conv::{Convolution, WithBias};
use super::{fast, slice, tracked};

/// The BatchNorm after a convolution: its scale and shift (C each), the
/// variance's epsilon, the LeakyReLU's slope (1 for none), and whether it
/// normalizes the pixel shuffle of the convolution's output.
pub struct NormArgs<'a> {
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub eps: f64,
    pub slope: f64,
    pub shuffled: bool,
}

thread_local! {
    /// Set inside [`twice_differentiable`].
    static UNFUSED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with its layers as separate ops, so that the gradients its
/// backward computes can be differentiated again (see the module doc). A
/// switch of this thread: what `f` hands to other threads still fuses.
pub fn twice_differentiable<R>(f: impl FnOnce() -> R) -> R {
    let before = UNFUSED.replace(true);
    let r = f();
    UNFUSED.set(before);
    r
}

/// Whether the fused op runs for these tensors: f32 on the CPU, with the
/// fast ops on, outside [`twice_differentiable`].
pub fn applies(ts: &[&Tensor]) -> bool {
    fast(ts) && fusing()
}

/// Whether layers may be ops whose backward is not differentiable again:
/// outside [`twice_differentiable`].
pub fn fusing() -> bool {
    !UNFUSED.get()
}

/// `conv` of `x` by `w` plus `b`, normalized by `bn`: the output and the
/// batch statistics.
pub(super) fn apply<C: Convolution>(
    conv: C,
    x: &Tensor,
    (w, b): (&Tensor, &Tensor),
    bn: &NormArgs,
) -> Result<Option<BatchNormTrain>> {
    let op = ConvBn::new(conv, b.dim(0)?, bn);
    let stats = Arc::clone(&op.norm.stats);
    // One argument for the three per-channel vectors: a custom op takes three.
    run(op, (x, w), &[b, bn.gamma, bn.beta], &stats)
}

/// `op` of (x, w, the concatenation of `params`), with the statistics its
/// BatchNorm left in `stats`.
fn run(
    op: impl CustomOp3 + Send + Sync + 'static,
    (x, w): (&Tensor, &Tensor),
    params: &[&Tensor],
    stats: &OnceLock<Stats>,
) -> Result<Option<BatchNormTrain>> {
    let y = x.contiguous()?.apply_op3(&w.contiguous()?, &Tensor::cat(params, 0)?, op)?;
    with_statistics(y, stats).map(Some)
}

/// [`apply`] after `first`, a convolution layer without a norm (kernel
/// and bias `w0`, `b0`): `first`'s output goes into `conv` inside one op
/// ([`Chain`]), so that, as the convolution's output inside [`ConvBn`],
/// it is no node of candle's graph, whose backward would zero and add a
/// gradient of its size. That is a discriminator's first layer, whose
/// output (64 channels at half the image's size) is its largest.
pub(super) fn apply_after<F: Convolution, C: Convolution>(
    first: WithBias<F>,
    conv: C,
    x: &Tensor,
    ((w0, b0), (w, b)): ((&Tensor, &Tensor), (&Tensor, &Tensor)),
    bn: &NormArgs,
) -> Result<Option<BatchNormTrain>> {
    let second = ConvBn::new(conv, b.dim(0)?, bn);
    let stats = Arc::clone(&second.norm.stats);
    let op = Chain::new(first, second, Larger::Second, w0.shape(), b0.dim(0)?);
    run(op, (x, w), &[&w0.flatten_all()?, b0, b, bn.gamma, bn.beta], &stats)
}

/// [`apply`], then `next`, a convolution layer without a norm (kernel and
/// bias `w1`, `b1`), as one op ([`Chain`]), so that the normed layer's
/// output is no node of candle's graph: a generator's last hidden layer
/// into its RGB layer (the hidden layer's output, 64 channels at half the
/// image's size, is G's largest), a discriminator's last into its head.
pub(super) fn apply_before<C: Convolution, N: Convolution>(
    conv: C,
    next: WithBias<N>,
    x: &Tensor,
    ((w, b), (w1, b1)): ((&Tensor, &Tensor), (&Tensor, &Tensor)),
    bn: &NormArgs,
) -> Result<Option<BatchNormTrain>> {
    let first = ConvBn::new(conv, b.dim(0)?, bn);
    let stats = Arc::clone(&first.norm.stats);
    let op = Chain::new(first, next, Larger::First, w1.shape(), b.dim(0)? + 2 * bn.gamma.dim(0)?);
    run(op, (x, w), &[&w1.flatten_all()?, b, bn.gamma, bn.beta, b1], &stats)
}

/// Which of two chained layers has the larger kernel.
#[derive(Clone, Copy)]
enum Larger {
    First,
    Second,
}

/// `second(first(x, w0, p0), w1, p1)`: two layers' ops, each run as it
/// would alone, as one op of (x, the larger kernel, [the smaller kernel |
/// p0 | p1]). One argument for the rest, as a custom op takes three; the
/// larger kernel goes as it is, uncopied, which also keeps its Winograd
/// transform from call to call (keyed by its address,
/// [`super::winograd::RecentTransforms`]).
struct Chain<A, B> {
    first: A,
    second: B,
    larger: Larger,
    /// The smaller kernel's shape.
    smaller: Shape,
    /// How many parameters the first layer takes.
    first_params: usize,
    /// The first layer's output, kept by the forward as a variable, so
    /// that the second's backward makes its gradient.
    y0: OnceLock<Var>,
}

impl<A, B> Chain<A, B> {
    fn new(first: A, second: B, larger: Larger, smaller: &Shape, first_params: usize) -> Self {
        Self { first, second, larger, smaller: smaller.clone(), first_params, y0: OnceLock::new() }
    }

    /// The smaller kernel, the first layer's parameters and the second's,
    /// as parts of `lp`.
    fn parts(&self, lp: &Layout) -> Result<[Layout; 3]> {
        let (k, p0, p) = (self.smaller.elem_count(), self.first_params, lp.shape().elem_count());
        if p < k + p0 || !lp.is_contiguous() {
            candle_core::bail!("chained layers: {:?} values are not a kernel and two layers' parameters", lp.dims());
        }
        let at = lp.start_offset();
        Ok([
            Layout::contiguous_with_offset(self.smaller.clone(), at),
            Layout::contiguous_with_offset(p0, at + k),
            Layout::contiguous_with_offset(p - k - p0, at + k + p0),
        ])
    }

    /// `(first, second)` of the larger and the smaller kernel.
    fn in_order<T>(&self, larger: T, smaller: T) -> (T, T) {
        match self.larger {
            Larger::First => (larger, smaller),
            Larger::Second => (smaller, larger),
        }
    }
}

impl<A: CustomOp3, B: CustomOp3> CustomOp3 for Chain<A, B> {
    fn name(&self) -> &'static str {
        "ganscope-conv-chain"
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
        // No timer of its own: the two layers' ops time themselves.
        let [lk, lp0, lp1] = self.parts(l3)?;
        let ((w0, l0), (w1, l1w)) = self.in_order((s2, l2), (s3, &lk));
        let (y0, shape) = self.first.cpu_fwd(s1, l1, w0, l0, s3, &lp0)?;
        let y = self.second.cpu_fwd(&y0, &Layout::contiguous(&shape), w1, l1w, s3, &lp1)?;
        let CpuStorage::F32(y0) = y0 else { candle_core::bail!("chained layers: the fast CPU ops take f32") };
        // The op runs once per `apply_op3`, so the cell is always empty here.
        let _ = self.y0.set(Var::from_vec(y0, shape, &Device::Cpu)?);
        Ok(y)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        params: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(y0) = self.y0.get() else { candle_core::bail!("chained layers: backward before forward") };
        let (k, p0) = (self.smaller.elem_count(), self.first_params);
        let smaller = params.narrow(0, 0, k)?.reshape(&self.smaller)?;
        let (p0, p1) = (params.narrow(0, k, p0)?, params.narrow(0, k + p0, params.dim(0)? - k - p0)?);
        let (w0, w1) = self.in_order(w, &smaller);
        let (dy0, dw1, dp1) = self.second.bwd(y0.as_tensor(), w1, &p1, y, dy)?;
        let Some(dy0) = dy0 else { candle_core::bail!("chained layers: no gradient for the first one's output") };
        let (dx, dw0, dp0) = self.first.bwd(x, w0, &p0, y0.as_tensor(), &dy0)?;
        // The same swap takes (first, second) back to (larger, smaller).
        let (dlarger, dsmaller) = self.in_order(dw0, dw1);
        let dparams = match (dsmaller, dp0, dp1) {
            (Some(dk), Some(dp0), Some(dp1)) => Some(Tensor::cat(&[&dk.flatten_all()?, &dp0, &dp1], 0)?),
            _ => None,
        };
        Ok((dx, dlarger, dparams))
    }
}

/// `leaky(bn(conv(x, w) + b))` for (x, w, [b | gamma | beta]).
struct ConvBn<C> {
    conv: C,
    norm: BatchNorm,
    /// The convolution's output channels, as many as `b` holds (4x
    /// gamma's and beta's when the BatchNorm's input is shuffled).
    biases: usize,
    /// The convolution's output, `conv(x, w) + b`, kept by the forward.
    z: OnceLock<Tensor>,
}

impl<C> ConvBn<C> {
    /// `conv` with `biases` output channels into the BatchNorm `bn`.
    fn new(conv: C, biases: usize, bn: &NormArgs) -> Self {
        Self { conv, norm: BatchNorm::new(bn.eps, bn.slope, bn.shuffled), biases, z: OnceLock::new() }
    }
}

impl<C: Convolution> CustomOp3 for ConvBn<C> {
    fn name(&self) -> &'static str {
        C::NORMED
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
        let params = slice(s3, l3, "convolution with batch norm")?;
        let o = self.biases;
        if params.len() < o || !(params.len() - o).is_multiple_of(2) {
            candle_core::bail!(
                "convolution with batch norm: {} values are not {o} biases, scales and shifts",
                params.len()
            );
        }
        let c = (params.len() - o) / 2;
        let bias = Layout::contiguous_with_offset(o, l3.start_offset());
        let (z, shape) = self.conv.forward((s1, l1), (s2, l2), Some((s3, &bias)))?;
        let CpuStorage::F32(z) = z else {
            candle_core::bail!("convolution with batch norm: the fast CPU ops take f32")
        };
        let (y, y_shape) = self.norm.normalize(&z, &Layout::contiguous(&shape), &params[o..o + c], &params[o + c..])?;
        // The op runs once per `apply_op3`, so the cell is always empty here.
        let _ = self.z.set(Tensor::from_vec(z, shape, &Device::Cpu)?);
        Ok((CpuStorage::F32(y), y_shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        params: &Tensor,
        _: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(z) = self.z.get() else { candle_core::bail!("convolution with batch norm: backward before forward") };
        let o = self.biases;
        let c = (params.dim(0)? - o) / 2;
        let (dz, dgamma, dbeta) = self.norm.grads(z, &params.narrow(0, o, c)?, dy)?;
        let (dx, dw) = self.conv.bwd(x, w, z, &dz)?;
        let dparams = tracked(params, || {
            let norm = Tensor::from_vec([dgamma, dbeta].concat(), 2 * c, x.device())?;
            Tensor::cat(&[&self.conv.bias_grad(&dz)?, &norm], 0)
        })?;
        Ok((dx, dw, dparams))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::DType;

    use super::*;
    use crate::ops::conv::{Layer, conv_batch_norm};

    #[test]
    fn graphs_differentiated_twice_keep_two_ops() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::ones((2, 3, 4, 4), DType::F32, &dev)?;
        let (w, b) = (Tensor::ones((4, 3, 3, 3), DType::F32, &dev)?, Tensor::zeros(4, DType::F32, &dev)?);
        let (gamma, beta) = (Tensor::ones(4, DType::F32, &dev)?, Tensor::zeros(4, DType::F32, &dev)?);
        let bn = NormArgs { gamma: &gamma, beta: &beta, eps: 1e-5, slope: 0.2, shuffled: false };
        let layer = Layer { w: &w, b: &b, geom: (1, 1), transposed: false, kept: None };
        let fused = || conv_batch_norm(&x, layer, &bn).map(|f| f.is_some());
        assert!(fused()?, "one op by default");
        assert!(!twice_differentiable(fused)?, "two ops inside twice_differentiable");
        assert!(fused()?, "one op again after it");
        Ok(())
    }
}
