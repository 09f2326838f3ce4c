//! LeakyReLU (ReLU at slope 0) as one op with its backward, on the CPU or
//! as CUDA kernels, and the generator's output tanh on the CPU.
//!
//! Why: with candle ops LeakyReLU is `maximum(x, slope * x)`: two passes
//! forward and, backward, equality masks for both branches, casts, products
//! and the sum of the two gradients (x is used twice), about ten passes over
//! the activations; in a DCGAN training step that was ~10% of the time.
//! Here it is one pass each way. The gradient at exactly 0 is `slope`, as in
//! PyTorch (candle's `maximum` splits it between the branches). candle's
//! CPU tanh calls the C library's `tanhf` once per value, 16 ns each here:
//! 0.19 ms of a 64 px generator's ~2-3 ms for one image. `fast_tanh`
//! is arithmetic the compiler vectorizes, and the backward is one pass
//! from the output instead of three.
//!
//! A convolution can also apply either activation in its own op ([`Act`]).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{CHUNK, fast, fast_cuda, par_chunked, slice};

/// The activation after a convolution, which its op applies to its own
/// output on the CPU (`conv::conv2d`) and differentiates from that output:
/// LeakyReLU at a slope >= 0 keeps the sign of its input, and tanh's
/// derivative is `1 - y²`.
///
/// Why: as an op of its own, the activation writes a second tensor, and
/// candle's backward zeroes one more gradient and adds into it: three
/// more passes over the layer's output, serial ones for candle's zeroing.
/// D's unnormalized first layer is its largest (N x 64 x R/2 x R/2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    Identity,
    /// LeakyReLU with this slope (0 is ReLU).
    Leaky(f64),
    Tanh,
}

impl Act {
    /// `x` through the activation as an op of its own: where the
    /// convolution runs without the fused op.
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Act::Identity => Ok(x.clone()),
            Act::Leaky(slope) => leaky_relu(x, slope),
            Act::Tanh => tanh(x),
        }
    }

    /// Applies the activation to a fused op's output in place.
    pub(super) fn apply_in_place(self, y: &mut [f32]) {
        match self {
            Act::Identity => {}
            Act::Leaky(slope) => {
                let s = slope as f32;
                map_in_place(y, move |v| leaky(v, s));
            }
            Act::Tanh => map_in_place(y, fast_tanh),
        }
    }

    /// `dy` back through the activation, from its output `y`;
    /// differentiable again.
    pub(super) fn grad_from_output(self, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        match self {
            Act::Identity => Ok(dy.clone()),
            // LeakyReLU's gradient is flat in `y`, which gets none from it:
            // detached, so a second backward (the WGAN gradient penalty)
            // does not wait for one.
            Act::Leaky(slope) if slope >= 0.0 => leaky_relu_grad(&y.detach(), dy, slope as f32),
            Act::Leaky(slope) => {
                candle_core::bail!("LeakyReLU at slope {slope} < 0 cannot be differentiated from its output")
            }
            Act::Tanh => tanh_grad(y, dy),
        }
    }
}

/// `y[i] = f(y[i])` in parallel chunks, each chunk's loop (`f` copied into
/// it, where it vectorizes) built for AVX-512 where the CPU has it.
///
/// Why: the build targets baseline x86-64, four values per SSE vector, and
/// `fast_tanh`'s polynomial is compute-bound: a 64-image 32 px RGB layer's
/// 196K values took 0.30 ms that way, 0.10 ms sixteen wide (one Xeon
/// thread).
fn map_in_place(y: &mut [f32], f: impl Fn(f32) -> f32 + Copy + Sync + Send) {
    #[cfg(target_arch = "x86_64")]
    if super::avx512f() {
        // SAFETY: the CPU has AVX-512F.
        return y.par_chunks_mut(CHUNK).for_each(|c| unsafe { avx512::map_in_place(c, f) });
    }
    y.par_chunks_mut(CHUNK).for_each(|c| c.iter_mut().for_each(|v| *v = f(*v)));
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    /// [`super::map_in_place`]'s loop, compiled for AVX-512F.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn map_in_place(y: &mut [f32], f: impl Fn(f32) -> f32) {
        y.iter_mut().for_each(|v| *v = f(*v));
    }
}

/// `x` where positive, `slope * x` elsewhere; at `slope` 1 (the fused
/// ops' "no activation") `x` itself, with no op.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    if slope == 1.0 {
        return Ok(x.clone());
    }
    if !(fast(&[x]) || fast_cuda(&[x])) {
        return if slope == 0.0 { x.relu() } else { x.maximum(&x.affine(slope, 0.0)?) };
    }
    x.contiguous()?.apply_op1(Leaky(slope as f32))
}

/// LeakyReLU of one value, a select that loops vectorize; NaN stays NaN
/// (so a diverged layer still shows in the loss), and at `slope` 1 it is
/// the identity, exactly.
#[inline(always)]
pub(super) fn leaky(x: f32, slope: f32) -> f32 {
    if x > 0.0 { x } else { x * slope }
}

/// `dy` through LeakyReLU at `x`: `dy` where `x > 0`, `slope * dy`
/// elsewhere; elementwise loops over it vectorize (reductions over it do
/// not: see `batch_norm::two_sums`).
#[inline(always)]
pub(super) fn leaky_grad(x: f32, dy: f32, slope: f32) -> f32 {
    dy * if x > 0.0 { 1.0 } else { slope }
}

/// The forward op.
struct Leaky(f32);

impl CustomOp1 for Leaky {
    fn name(&self) -> &'static str {
        "ganscope-leaky-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _timer = super::profile::Timer::start(self.name(), &[l]);
        let x = slice(s, l, "leaky relu")?;
        let slope = self.0;
        // `slope` copied into each chunk's closure and a select: the loop vectorizes.
        let y = par_chunked(x.len(), CHUNK, |_, r| {
            let s = slope;
            x[r].iter().map(move |&v| leaky(v, s))
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
        leaky_relu_grad(x, dy, self.0).map(Some)
    }
}

/// `dy` through LeakyReLU at `x` (or at its output, which has the same
/// sign), differentiable again.
pub(super) fn leaky_relu_grad(x: &Tensor, dy: &Tensor, slope: f32) -> Result<Tensor> {
    x.apply_op2(&dy.contiguous()?, LeakyGrad(slope))
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
        let _timer = super::profile::Timer::start(self.name(), &[l1, l2]);
        let slope = self.0;
        zip_map("leaky relu grad", (s1, l1), (s2, l2), move |x, d| leaky_grad(x, d, slope))
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
        Ok((None, Some(leaky_relu_grad(x, g, self.0)?)))
    }
}

/// `f(a, b)` value by value over two arguments of one shape, in parallel
/// chunks; `what` names the op in errors. `f` is copied into each chunk's
/// loop, which keeps it free of captured references and vectorizing.
fn zip_map(
    what: &str,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    f: impl Fn(f32, f32) -> f32 + Copy + Sync,
) -> Result<(CpuStorage, Shape)> {
    let (a, b) = (slice(s1, l1, what)?, slice(s2, l2, what)?);
    if a.len() != b.len() {
        candle_core::bail!("{what}: shapes {:?} and {:?} differ", l1.dims(), l2.dims());
    }
    let out = par_chunked(a.len(), CHUNK, |_, r| a[r.clone()].iter().zip(&b[r]).map(move |(&a, &b)| f(a, b)));
    Ok((CpuStorage::F32(out), l1.shape().clone()))
}

/// `tanh(x)`: the fused op for f32 on the CPU, candle's elsewhere.
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    if !fast(&[x]) {
        return x.tanh();
    }
    x.contiguous()?.apply_op1(Tanh)
}

/// The forward op.
struct Tanh;

impl CustomOp1 for Tanh {
    fn name(&self) -> &'static str {
        "ganscope-tanh"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _timer = super::profile::Timer::start(self.name(), &[l]);
        let x = slice(s, l, "tanh")?;
        let y = par_chunked(x.len(), CHUNK, |_, r| x[r].iter().map(|&v| fast_tanh(v)));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        tanh_grad(y, dy).map(Some)
    }
}

/// `dy` through tanh, from its output `y`, differentiable again.
fn tanh_grad(y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    y.apply_op2(&dy.contiguous()?, TanhGrad)
}

/// The backward from the output, `dx = dy * (1 - y²)`, as an op of its own
/// so that it can be differentiated again.
struct TanhGrad;

impl CustomOp2 for TanhGrad {
    fn name(&self) -> &'static str {
        "ganscope-tanh-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let _timer = super::profile::Timer::start(self.name(), &[l1, l2]);
        zip_map("tanh grad", (s1, l1), (s2, l2), |y, d| d * (1.0 - y * y))
    }

    /// Linear in `dy`; in `y`, `d(dx)/dy = -2 y dy`.
    fn bwd(&self, y: &Tensor, dy: &Tensor, _: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let dy_y = ((y * dy)? * &g)?.affine(-2.0, 0.0)?;
        Ok((Some(dy_y), Some(tanh_grad(y, &g)?)))
    }
}

/// `tanh(x)` within 2e-7, without a library call, so that a loop over it
/// vectorizes: `1 - 2 / (e^2|x| + 1)` with the sign of x, where `e^2|x| =
/// 2^n e^r` (|r| <= ln2 / 2, e^r by its Taylor series to r^6, relative error
/// 1.2e-7), and the series `x - x³/3 + 2x⁵/15` below 1/32, where the
/// subtraction would cancel.
#[inline(always)]
fn fast_tanh(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // tanh(10) rounds to 1 in f32, and 2^29 keeps the exponent in range.
    let a = x.abs().min(10.0);
    // Rounded by truncation, as the value is positive: a saturating `as`
    // kept the loop from vectorizing (0.47 against 0.30 ms for 196K values).
    // SAFETY: 0.5 <= the value < 29.4, finite and in i32's range (NaN
    // became 10 in `a`).
    let n: i32 = unsafe { (2.0 * a * std::f32::consts::LOG2_E + 0.5).to_int_unchecked() };
    let r = (2.0 * a - n as f32 * LN2_HI) - n as f32 * LN2_LO;
    let er = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let e = er * f32::from_bits(((n + 127) << 23) as u32);
    let large = 1.0 - 2.0 / (e + 1.0);
    let a2 = a * a;
    let small = a * (1.0 + a2 * (-1.0 / 3.0 + a2 * (2.0 / 15.0)));
    let y = if a < 1.0 / 32.0 { small } else { large }.copysign(x);
    if x.is_nan() { x } else { y }
}

#[cfg(test)]
mod tests {
    use super::{fast_tanh, leaky, map_in_place};

    #[test]
    fn wide_loops_match_the_scalar_functions() {
        // Several chunks, a ragged end, and the special values.
        let mut xs: Vec<f32> = (-150_000..150_001).map(|i| i as f32 * 1.7e-4).collect();
        xs.extend([0.0, -0.0, 1e-30, -1e-30, 30.0, -30.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN]);
        // Each function as its own type, inlined into the loop it tests.
        fn check(name: &str, xs: &[f32], f: impl Fn(f32) -> f32 + Copy + Sync + Send) {
            let mut ys = xs.to_vec();
            map_in_place(&mut ys, f);
            for (x, y) in xs.iter().zip(&ys) {
                assert_eq!(y.to_bits(), f(*x).to_bits(), "{name}({x})");
            }
        }
        check("tanh", &xs, fast_tanh);
        check("leaky", &xs, |v| leaky(v, 0.2));
    }

    #[test]
    fn fast_tanh_is_tanh() {
        let mut worst = 0f64;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4;
            let err = (f64::from(fast_tanh(x)) - f64::from(x).tanh()).abs();
            worst = worst.max(err);
        }
        assert!(worst < 2e-7, "max error {worst} on [-20, 20]");
        for x in [0.0f32, -0.0, 1e-30, -1e-30, f32::MIN_POSITIVE, 30.0, -30.0, f32::INFINITY, f32::NEG_INFINITY] {
            let want = x.tanh();
            assert!(fast_tanh(x) == want && fast_tanh(x).is_sign_negative() == want.is_sign_negative(), "tanh({x})");
        }
        assert!(fast_tanh(f32::NAN).is_nan());
    }
}
