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
//! bit.
//!
//! Not for a graph that is differentiated twice (the gradient penalty):
//! the kept output is a constant to candle, so the backward's own graph
//! would miss its dependence on the input and the weights. There the
//! layers run as two ops ([`twice_differentiable`]).

use std::cell::Cell;
use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp3, Device, Layout, Result, Shape, Tensor};

use super::batch_norm::{BatchNorm, BatchNormTrain, with_statistics};
use super::conv::Convolution;
use super::{bias, fast, slice, tracked};

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
/// backward computes can be differentiated again (see the module doc).
pub fn twice_differentiable<R>(f: impl FnOnce() -> R) -> R {
    let before = UNFUSED.replace(true);
    let r = f();
    UNFUSED.set(before);
    r
}

/// Whether the fused op runs for these tensors: f32 on the CPU, with the
/// fast ops on, outside [`twice_differentiable`].
pub(super) fn applies(ts: &[&Tensor]) -> bool {
    fast(ts) && !UNFUSED.get()
}

/// `conv` of `x` by `w` plus `b`, normalized by `bn`: the output and the
/// batch statistics.
pub(super) fn apply<C: Convolution>(
    conv: C,
    x: &Tensor,
    (w, b): (&Tensor, &Tensor),
    bn: &NormArgs,
) -> Result<Option<BatchNormTrain>> {
    let norm = BatchNorm::new(bn.eps, bn.slope, bn.shuffled);
    let stats = Arc::clone(&norm.stats);
    // One argument for the three per-channel vectors: a custom op takes three.
    let params = Tensor::cat(&[b, bn.gamma, bn.beta], 0)?;
    let op = ConvBn { conv, norm, biases: b.dim(0)?, z: OnceLock::new() };
    let y = x.contiguous()?.apply_op3(&w.contiguous()?, &params, op)?;
    with_statistics(y, &stats).map(Some)
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
            Tensor::cat(&[&bias::channel_sum(&dz)?, &norm], 0)
        })?;
        Ok((dx, dw, dparams))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::DType;

    use super::*;
    use crate::ops::conv::conv_batch_norm;

    #[test]
    fn graphs_differentiated_twice_keep_two_ops() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::ones((2, 3, 4, 4), DType::F32, &dev)?;
        let (w, b) = (Tensor::ones((4, 3, 3, 3), DType::F32, &dev)?, Tensor::zeros(4, DType::F32, &dev)?);
        let (gamma, beta) = (Tensor::ones(4, DType::F32, &dev)?, Tensor::zeros(4, DType::F32, &dev)?);
        let bn = NormArgs { gamma: &gamma, beta: &beta, eps: 1e-5, slope: 0.2, shuffled: false };
        let fused = || conv_batch_norm(&x, (&w, &b), (1, 1, false), None, &bn).map(|f| f.is_some());
        assert!(fused()?, "one op by default");
        assert!(!twice_differentiable(fused)?, "two ops inside twice_differentiable");
        assert!(fused()?, "one op again after it");
        Ok(())
    }
}
