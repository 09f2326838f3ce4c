//! Adam's update as three in-place passes, on the CPU or as CUDA kernels.
//!
//! Why: written with candle ops, one Adam update is thirteen elementwise
//! ops per parameter tensor, each allocating and writing a full tensor (and,
//! in candle 0.11, each large one dispatched to its spinning thread pool).
//! Here the moments are updated in place, and the parameter in one pass
//! reading both; the arithmetic is the same as the candle-op version
//! (`optim::Optimizer::step`), in the same order. On CUDA the same three
//! passes are kernels of `kernels.cu`, where candle's ops launched thirteen.

use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor};
use rayon::prelude::*;

use super::{CHUNK, fast, fast_cuda, slice, slice_mut};

/// Adam's constants for one step.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Bias corrections, `1 - beta^t`.
    pub c1: f64,
    /// As `c1`, for the second moment.
    pub c2: f64,
    /// Added to the root of the second moment.
    pub eps: f64,
}

/// Updates `p`, `m` and `v` in place from the gradient `g`, when all four
/// are contiguous f32 on the CPU or on CUDA; returns false (touching
/// nothing) otherwise.
pub fn update(p: &Tensor, m: &Tensor, v: &Tensor, g: &Tensor, s: Step) -> Result<bool> {
    let ts = [p, m, v, g];
    if !(fast(&ts) || fast_cuda(&ts)) || ![p, m, v].iter().all(|t| t.is_contiguous()) {
        return Ok(false);
    }
    let g = g.contiguous()?;
    m.inplace_op2(&g, &Moment { decay: s.beta1, square: false })?;
    v.inplace_op2(&g, &Moment { decay: s.beta2, square: true })?;
    p.inplace_op3(m, v, &Apply(s))?;
    Ok(true)
}

/// `m = decay * m + (1 - decay) * g` (or `g * g` for the second moment).
struct Moment {
    decay: f64,
    square: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "ganscope-adam-moment"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let _timer = super::profile::Timer::start(self.name(), &[l1, l2]);
        let (m, g) = (slice_mut(s1, l1, "adam")?, slice(s2, l2, "adam")?);
        if m.len() != g.len() {
            candle_core::bail!("adam: moment {:?} and gradient {:?} differ", l1.dims(), l2.dims());
        }
        let (d, rest, square) = (self.decay as f32, (1.0 - self.decay) as f32, self.square);
        m.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).for_each(|(m, g)| {
            for (m, &g) in m.iter_mut().zip(g) {
                let g = if square { g * g } else { g };
                *m = *m * d + g * rest;
            }
        });
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<()> {
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;

        let (n, g) = (super::cuda::count(l1.shape().elem_count(), "adam")?, super::cuda::view(s2, l2, "adam")?);
        if l1.shape() != l2.shape() {
            candle_core::bail!("adam: moment {:?} and gradient {:?} differ", l1.dims(), l2.dims());
        }
        let k = super::cuda::Kernel::new(&s1.device, "ganscope_adam_moment_f32", n)?;
        let mut m = super::cuda::view_mut(s1, l1, "adam")?;
        let (d, rest, square) = (self.decay as f32, (1.0 - self.decay) as f32, u32::from(self.square));
        let mut args = k.args();
        args.arg(&mut m).arg(&g).arg(&n).arg(&d).arg(&rest).arg(&square);
        k.launch(args)
    }
}

/// `p -= lr * (m / c1) / (sqrt(v / c2) + eps)`.
struct Apply(Step);

impl InplaceOp3 for Apply {
    fn name(&self) -> &'static str {
        "ganscope-adam-apply"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let _timer = super::profile::Timer::start(self.name(), &[l1, l2, l3]);
        let (p, m, v) = (slice_mut(s1, l1, "adam")?, slice(s2, l2, "adam")?, slice(s3, l3, "adam")?);
        if p.len() != m.len() || p.len() != v.len() {
            candle_core::bail!("adam: parameter {:?} and moments {:?}, {:?} differ", l1.dims(), l2.dims(), l3.dims());
        }
        let s = self.0;
        let (lr, c1, c2, eps) = (s.lr as f32, s.c1 as f32, s.c2 as f32, s.eps as f32);
        p.par_chunks_mut(CHUNK).zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK))).for_each(|(p, (m, v))| {
            for (p, (&m, &v)) in p.iter_mut().zip(m.iter().zip(v)) {
                *p -= (m / c1) / ((v / c2).sqrt() + eps) * lr;
            }
        });
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<()> {
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;

        if l1.shape() != l2.shape() || l1.shape() != l3.shape() {
            candle_core::bail!("adam: parameter {:?} and moments {:?}, {:?} differ", l1.dims(), l2.dims(), l3.dims());
        }
        let n = super::cuda::count(l1.shape().elem_count(), "adam")?;
        let (m, v) = (super::cuda::view(s2, l2, "adam")?, super::cuda::view(s3, l3, "adam")?);
        let k = super::cuda::Kernel::new(&s1.device, "ganscope_adam_apply_f32", n)?;
        let mut p = super::cuda::view_mut(s1, l1, "adam")?;
        let s = self.0;
        let (lr, c1, c2, eps) = (s.lr as f32, s.c1 as f32, s.c2 as f32, s.eps as f32);
        let mut args = k.args();
        args.arg(&mut p).arg(&m).arg(&v).arg(&n).arg(&lr).arg(&c1).arg(&c2).arg(&eps);
        k.launch(args)
    }
}
