//! LeakyReLU (ReLU at slope 0) as one op with its backward, on the CPU or
//! as CUDA kernels.
//!
//! Why: with candle ops LeakyReLU is `maximum(x, slope * x)`: two passes
//! forward and, backward, equality masks for both branches, casts, products
//! and the sum of the two gradients (x is used twice), about ten passes over
//! the activations; in a DCGAN training step that was ~10% of the time.
//! Here it is one pass each way. The gradient at exactly 0 is `slope`, as in
//! PyTorch (candle's `maximum` splits it between the branches).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::{CHUNK, fast, fast_cuda, par_chunked, slice};

/// `x` where positive, `slope * x` elsewhere.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    if !(fast(&[x]) || fast_cuda(&[x])) {
        return if slope == 0.0 { x.relu() } else { x.maximum(&x.affine(slope, 0.0)?) };
    }
    x.contiguous()?.apply_op1(Leaky(slope as f32))
}

/// The forward op.
struct Leaky(f32);

impl CustomOp1 for Leaky {
    fn name(&self) -> &'static str {
        "ganscope-leaky-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "leaky relu")?;
        let slope = self.0;
        // `slope` copied into each chunk's closure and no branches: the loop vectorizes.
        let y = par_chunked(x.len(), CHUNK, |_, r| {
            let s = slope;
            x[r].iter().map(move |&v| v.max(0.0) + s * v.min(0.0))
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;

        let (x, n) =
            (super::cuda::view(s, l, "leaky relu")?, super::cuda::count(l.shape().elem_count(), "leaky relu")?);
        let (k, y) =
            (super::cuda::Kernel::new(&s.device, "ganscope_leaky_f32", n)?, super::cuda::output(&s.device, n)?);
        let mut args = k.args();
        args.arg(&x).arg(&y).arg(&n).arg(&self.0);
        k.launch(args)?;
        Ok((super::cuda::storage(y, &s.device), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2(&dy.contiguous()?, LeakyGrad(self.0))?))
    }
}

/// The backward, `dx = dy * (x > 0 ? 1 : slope)`, as an op of its own so
/// that it can be differentiated again (the WGAN gradient penalty does):
/// it is linear in `dy` and flat in `x` almost everywhere.
struct LeakyGrad(f32);

impl CustomOp2 for LeakyGrad {
    fn name(&self) -> &'static str {
        "ganscope-leaky-relu-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, dy) = (slice(s1, l1, "leaky relu grad")?, slice(s2, l2, "leaky relu grad")?);
        if x.len() != dy.len() {
            candle_core::bail!("leaky relu grad: shapes {:?} and {:?} differ", l1.dims(), l2.dims());
        }
        let slope = self.0;
        let dx = par_chunked(x.len(), CHUNK, |_, r| {
            let s = slope;
            x[r.clone()].iter().zip(&dy[r]).map(move |(&x, &d)| if x > 0.0 { d } else { d * s })
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;

        let what = "leaky relu grad";
        if l1.shape() != l2.shape() {
            candle_core::bail!("{what}: shapes {:?} and {:?} differ", l1.dims(), l2.dims());
        }
        let (x, dy) = (super::cuda::view(s1, l1, what)?, super::cuda::view(s2, l2, what)?);
        let n = super::cuda::count(l1.shape().elem_count(), what)?;
        let (k, dx) =
            (super::cuda::Kernel::new(&s1.device, "ganscope_leaky_grad_f32", n)?, super::cuda::output(&s1.device, n)?);
        let mut args = k.args();
        args.arg(&x).arg(&dy).arg(&dx).arg(&n).arg(&self.0);
        k.launch(args)?;
        Ok((super::cuda::storage(dx, &s1.device), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _: &Tensor, _: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((None, Some(x.apply_op2(&g.contiguous()?, LeakyGrad(self.0))?)))
    }
}
