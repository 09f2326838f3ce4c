//! Layers shared by G and D: convolutions (optionally spectrally
//! normalized), norms, dropout with our own RNG, pixel shuffle and the
//! minibatch-stddev feature. Plain structs built from a [`Scope`].

use std::sync::OnceLock;

use candle_core::{D, Result, Tensor, Var};
use rand_chacha::ChaCha8Rng;

use super::config::NormKind;
use super::params::{Init, Role, Scope, uniform};
use crate::ops;
use crate::ops::activation::{Act, leaky_relu};
use crate::ops::shuffle::pixel_shuffle;

/// DCGAN's weight init: N(0, 0.02) (Radford et al. 2015).
const W_INIT: Init = Init::Normal(0.0, 0.02);
/// BatchNorm running-statistics momentum (PyTorch's default).
const BN_MOMENTUM: f64 = 0.1;
const EPS: f64 = 1e-5;

/// What one forward pass should do besides computing.
pub struct Pass<'r> {
    /// Training mode: batch statistics, running-stat updates, layer noise.
    pub train: bool,
    /// Apply G's dropout (tip 17: on in training, optional at sampling time).
    pub dropout: bool,
    /// Randomness for dropout masks and noise; none means neither is applied.
    pub rng: Option<&'r mut ChaCha8Rng>,
}

impl Pass<'_> {
    /// Deterministic inference: running statistics, no dropout, no noise.
    pub fn eval() -> Pass<'static> {
        Pass { train: false, dropout: false, rng: None }
    }
}

/// Writes `value` into a buffer tensor in place when it is a [`Var`]
/// (training); a loaded, plain tensor is left as it is.
fn update_buffer(buffer: &Tensor, value: &Tensor) -> Result<()> {
    if buffer.is_variable() {
        Var::from_tensor(buffer)?.set(&value.detach())?;
    }
    Ok(())
}

/// Spectral normalization (Miyato et al. 2018): divides a weight by its
/// largest singular value, estimated by one power iteration per training pass.
pub struct SpectralNorm {
    u: Tensor,
}

impl SpectralNorm {
    fn new(s: &mut Scope, rows: usize) -> Result<Self> {
        Ok(Self { u: s.get("sn_u", &[rows], Init::UnitRandom, Role::Buffer)? })
    }

    /// `w` divided by its largest singular value where `sn` is given, else
    /// `w` itself.
    fn weight(sn: Option<&Self>, w: &Tensor, train: bool) -> Result<Tensor> {
        match sn {
            Some(sn) => sn.apply(w, train),
            None => Ok(w.clone()),
        }
    }

    fn apply(&self, w: &Tensor, train: bool) -> Result<Tensor> {
        let rows = w.dim(0)?;
        let wm = w.reshape((rows, ()))?;
        let wd = wm.detach();
        let l2n = |t: Tensor| -> Result<Tensor> {
            let n = t.sqr()?.sum_all()?.sqrt()?.affine(1.0, 1e-12)?;
            t.broadcast_div(&n)
        };
        let v = l2n(self.u.reshape((1, rows))?.matmul(&wd)?)?;
        let u = l2n(v.matmul(&wd.t()?)?)?;
        if train {
            update_buffer(&self.u, &u.reshape(rows)?)?;
        }
        let sigma = u.matmul(&wm)?.matmul(&v.t()?)?;
        w.broadcast_div(&sigma.reshape(vec![1; w.rank()])?)
    }
}

/// A 2D convolution with bias.
pub struct Conv {
    w: Tensor,
    b: Tensor,
    stride: usize,
    pad: usize,
    sn: Option<SpectralNorm>,
    /// The kernel's derived forms, kept when the weights are constant
    /// (and not spectrally normalized, which rescales them every call).
    kept: Option<ops::conv::KeptKernel>,
}

impl Conv {
    /// `k`x`k` kernel from `cin` to `cout` channels.
    pub fn new(s: &mut Scope, cin: usize, cout: usize, k: usize, stride: usize, pad: usize, sn: bool) -> Result<Self> {
        let w = s.get("weight", &[cout, cin, k, k], W_INIT, Role::Trainable)?;
        let b = s.get("bias", &[cout], Init::Zeros, Role::Trainable)?;
        let sn = if sn { Some(SpectralNorm::new(s, cout)?) } else { None };
        let kept = (s.constant() && sn.is_none()).then(Default::default);
        Ok(Self { w, b, stride, pad, sn, kept })
    }

    /// Convolves `x` (N, C, H, W), then applies `act`.
    pub fn forward(&self, x: &Tensor, train: bool, act: Act) -> Result<Tensor> {
        ops::conv2d(x, &self.weight(train)?, &self.b, self.stride, self.pad, act, self.kept.as_ref())
    }

    /// [`Self::forward`] through `norm` and its LeakyReLU with `slope`
    /// (of the output's pixel shuffle when `shuffled`): one op for a
    /// BatchNorm in training on the CPU ([`ops::conv_bn`]).
    pub fn forward_normed(
        &self,
        x: &Tensor,
        train: bool,
        norm: &Norm,
        (slope, shuffled): (f64, bool),
    ) -> Result<Tensor> {
        let w = self.weight(train)?;
        let fused = |bn: &ops::conv_bn::NormArgs| ops::conv::conv_batch_norm(x, self.layer(&w), bn);
        if let Some(y) = norm.after(train, (slope, shuffled), fused)? {
            return Ok(y);
        }
        let y = ops::conv2d(x, &w, &self.b, self.stride, self.pad, Act::Identity, self.kept.as_ref())?;
        if shuffled { norm.forward_leaky_shuffled(&y, train, slope) } else { norm.forward_leaky(&y, train, slope) }
    }

    /// [`Self::forward_normed`] (not shuffled) of `first`'s output, where
    /// `first` is a layer without a norm that applies `act`: the two
    /// layers as one op where `forward_normed` would fuse
    /// ([`ops::conv::conv2d_then_batch_norm`]), None elsewhere.
    pub fn after(
        &self,
        (first, act): (&Conv, Act),
        x: &Tensor,
        train: bool,
        norm: &Norm,
        slope: f64,
    ) -> Result<Option<Tensor>> {
        let fused = |bn: &ops::conv_bn::NormArgs| {
            if !ops::conv_bn::applies(&[x, &first.w, &self.w]) {
                return Ok(None);
            }
            let (w0, w) = (first.weight(train)?, self.weight(train)?);
            ops::conv::conv2d_then_batch_norm(x, (first.layer(&w0), act), self.layer(&w), bn)
        };
        norm.after(train, (slope, false), fused)
    }

    /// [`Self::forward_normed`], then `next` (built by [`Self::layer`] or
    /// [`ConvTranspose::layer`]) and its `act`: the two layers as one op
    /// where `forward_normed` would fuse ([`ops::conv::batch_norm_then`]),
    /// None elsewhere.
    pub fn normed_then(
        &self,
        x: &Tensor,
        train: bool,
        norm: &Norm,
        (slope, shuffled): (f64, bool),
        next: (ops::conv::Layer, Act),
    ) -> Result<Option<Tensor>> {
        let fused = |bn: &ops::conv_bn::NormArgs| {
            if !ops::conv_bn::applies(&[x, &self.w]) {
                return Ok(None);
            }
            ops::conv::batch_norm_then(x, self.layer(&self.weight(train)?), bn, next)
        };
        norm.after(train, (slope, shuffled), fused)
    }

    /// This layer with kernel `w` (its own, or spectrally normalized by
    /// [`Self::weight`]) for the fused ops.
    pub fn layer<'a>(&'a self, w: &'a Tensor) -> ops::conv::Layer<'a> {
        let (geom, kept) = ((self.stride, self.pad), self.kept.as_ref());
        ops::conv::Layer { w, b: &self.b, geom, transposed: false, kept }
    }

    /// The kernel, spectrally normalized where configured: one power
    /// iteration per call in training.
    pub fn weight(&self, train: bool) -> Result<Tensor> {
        SpectralNorm::weight(self.sn.as_ref(), &self.w, train)
    }
}

/// A 4x4 stride-2 transposed convolution that doubles H and W.
pub struct ConvTranspose {
    w: Tensor,
    b: Tensor,
    /// The kernel's derived forms, kept when the weights are constant.
    kept: Option<ops::conv::KeptKernel>,
}

impl ConvTranspose {
    /// From `cin` to `cout` channels.
    pub fn new(s: &mut Scope, cin: usize, cout: usize) -> Result<Self> {
        let w = s.get("weight", &[cin, cout, 4, 4], W_INIT, Role::Trainable)?;
        let b = s.get("bias", &[cout], Init::Zeros, Role::Trainable)?;
        Ok(Self { w, b, kept: s.constant().then(Default::default) })
    }

    /// Upsamples `x` (N, C, H, W) to (N, cout, 2H, 2W), then applies `act`.
    pub fn forward(&self, x: &Tensor, act: Act) -> Result<Tensor> {
        ops::conv_transpose2d(x, &self.w, &self.b, 2, 1, act, self.kept.as_ref())
    }

    /// [`Self::forward`] through `norm` and its LeakyReLU with `slope`: one
    /// op for a BatchNorm in training on the CPU ([`ops::conv_bn`]).
    pub fn forward_normed(&self, x: &Tensor, train: bool, norm: &Norm, slope: f64) -> Result<Tensor> {
        let fused = |bn: &ops::conv_bn::NormArgs| ops::conv::conv_batch_norm(x, self.layer(), bn);
        match norm.after(train, (slope, false), fused)? {
            Some(y) => Ok(y),
            None => norm.forward_leaky(&self.forward(x, Act::Identity)?, train, slope),
        }
    }

    /// [`Self::forward_normed`], then `next` and its `act` as one op where
    /// `forward_normed` would fuse ([`ops::conv::batch_norm_then`]), None
    /// elsewhere.
    pub fn normed_then(
        &self,
        x: &Tensor,
        train: bool,
        norm: &Norm,
        slope: f64,
        next: (ops::conv::Layer, Act),
    ) -> Result<Option<Tensor>> {
        norm.after(train, (slope, false), |bn| ops::conv::batch_norm_then(x, self.layer(), bn, next))
    }

    /// This layer for the fused ops.
    pub fn layer(&self) -> ops::conv::Layer<'_> {
        ops::conv::Layer { w: &self.w, b: &self.b, geom: (2, 1), transposed: true, kept: self.kept.as_ref() }
    }
}

/// Nearest 2x upsampling then a 3x3 convolution from `cin` to `cout`
/// channels, run as the transposed convolution it equals
/// ([`ops::upsample`]).
pub struct ResizeConv {
    w: Tensor,
    b: Tensor,
    /// The folded kernel and its derived forms, kept when the weights are constant.
    frozen: Option<(OnceLock<Tensor>, ops::conv::KeptKernel)>,
}

impl ResizeConv {
    /// From `cin` to `cout` channels; the weights are those of a plain 3x3 [`Conv`].
    pub fn new(s: &mut Scope, cin: usize, cout: usize) -> Result<Self> {
        let w = s.get("weight", &[cout, cin, 3, 3], W_INIT, Role::Trainable)?;
        let b = s.get("bias", &[cout], Init::Zeros, Role::Trainable)?;
        Ok(Self { w, b, frozen: s.constant().then(Default::default) })
    }

    /// Upsamples `x` (N, C, H, W) to (N, cout, 2H, 2W), then applies `act`.
    pub fn forward(&self, x: &Tensor, act: Act) -> Result<Tensor> {
        ops::upsample::upsample_conv3x3(x, &self.w, &self.b, self.frozen.as_ref(), act)
    }
}

/// A fully connected layer, optionally spectrally normalized.
pub struct Linear {
    w: Tensor,
    b: Tensor,
    sn: Option<SpectralNorm>,
}

impl Linear {
    /// From `din` to `dout` features.
    pub fn new(s: &mut Scope, din: usize, dout: usize, sn: bool) -> Result<Self> {
        let w = s.get("weight", &[dout, din], W_INIT, Role::Trainable)?;
        let b = s.get("bias", &[dout], Init::Zeros, Role::Trainable)?;
        let sn = if sn { Some(SpectralNorm::new(s, dout)?) } else { None };
        Ok(Self { w, b, sn })
    }

    /// `x` (N, din) to (N, dout).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.apply(x, &self.weight(train)?)
    }

    /// [`Self::forward`] shaped (N, C, H, W) with `out` = (C, H, W),
    /// through `norm` and its LeakyReLU with `slope`: one op for a
    /// BatchNorm in training on the CPU ([`ops::dense::linear_batch_norm`]).
    pub fn forward_normed(
        &self,
        x: &Tensor,
        train: bool,
        (norm, slope): (&Norm, f64),
        out: (usize, usize, usize),
    ) -> Result<Tensor> {
        let w = self.weight(train)?;
        let fused = |bn: &ops::conv_bn::NormArgs| ops::dense::linear_batch_norm(x, (&w, &self.b), out, bn);
        if let Some(y) = norm.after(train, (slope, false), fused)? {
            return Ok(y);
        }
        let y = self.apply(x, &w)?.reshape((x.dim(0)?, out.0, out.1, out.2))?;
        norm.forward_leaky(&y, train, slope)
    }

    /// [`Self::forward`] with the weight from [`Self::weight`].
    pub fn apply(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        x.matmul(&w.t()?)?.broadcast_add(&self.b)
    }

    /// The weight (dout, din), spectrally normalized where configured: one
    /// power iteration per call in training.
    pub fn weight(&self, train: bool) -> Result<Tensor> {
        SpectralNorm::weight(self.sn.as_ref(), &self.w, train)
    }

    /// The bias (dout).
    pub fn bias(&self) -> &Tensor {
        &self.b
    }
}

/// A normalization layer over (N, C, H, W) (tip 4).
pub enum Norm {
    /// BatchNorm with affine parameters and running statistics.
    Batch { gamma: Tensor, beta: Tensor, mean: Tensor, var: Tensor },
    /// InstanceNorm with affine parameters.
    Instance { gamma: Tensor, beta: Tensor },
    /// PixelNorm (Karras et al. 2018).
    Pixel,
    /// Identity.
    None,
}

impl Norm {
    /// A norm of `kind` over `c` channels.
    pub fn new(s: &mut Scope, kind: NormKind, c: usize) -> Result<Self> {
        Ok(match kind {
            NormKind::Batch => Norm::Batch {
                gamma: s.get("gamma", &[c], Init::Normal(1.0, 0.02), Role::Trainable)?,
                beta: s.get("beta", &[c], Init::Zeros, Role::Trainable)?,
                mean: s.get("running_mean", &[c], Init::Zeros, Role::Buffer)?,
                var: s.get("running_var", &[c], Init::Ones, Role::Buffer)?,
            },
            NormKind::Instance => Norm::Instance {
                gamma: s.get("gamma", &[c], Init::Normal(1.0, 0.02), Role::Trainable)?,
                beta: s.get("beta", &[c], Init::Zeros, Role::Trainable)?,
            },
            NormKind::Pixel => Norm::Pixel,
            NormKind::None => Norm::None,
        })
    }

    /// Normalizes `x`, then applies LeakyReLU with `slope` (0 is ReLU);
    /// BatchNorm uses batch statistics (and updates the running ones) when
    /// `train`, running statistics otherwise, with the activation fused in.
    pub fn forward_leaky(&self, x: &Tensor, train: bool, slope: f64) -> Result<Tensor> {
        let per_channel = |t: &Tensor| t.reshape((1, (), 1, 1));
        let y = match self {
            Norm::Batch { gamma, beta, mean, var } => {
                return batch_norm_leaky(x, (gamma, beta), (mean, var), train, slope);
            }
            Norm::Instance { gamma, beta } => {
                let m = x.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)?;
                let centered = x.broadcast_sub(&m)?;
                let v = centered.sqr()?.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)?;
                let xn = centered.broadcast_div(&(v + EPS)?.sqrt()?)?;
                xn.broadcast_mul(&per_channel(gamma)?)?.broadcast_add(&per_channel(beta)?)?
            }
            Norm::Pixel => {
                let rms = (x.sqr()?.mean_keepdim(1)? + 1e-8)?.sqrt()?;
                x.broadcast_div(&rms)?
            }
            Norm::None => x.clone(),
        };
        leaky_relu(&y, slope)
    }

    /// A convolution layer through this norm and LeakyReLU with `slope`
    /// (of its output's pixel shuffle when `shuffled`) as one op, for a
    /// BatchNorm in training ([`ops::conv_bn`]): `conv` runs it for the
    /// BatchNorm it is given, returning the output and batch statistics,
    /// or None where it does not run (not on the CPU fast path). None also
    /// for other norms and in inference.
    fn after(
        &self,
        train: bool,
        (slope, shuffled): (f64, bool),
        conv: impl FnOnce(&ops::conv_bn::NormArgs) -> Result<Option<ops::batch_norm::BatchNormTrain>>,
    ) -> Result<Option<Tensor>> {
        let Norm::Batch { gamma, beta, mean, var } = self else { return Ok(None) };
        if !train {
            return Ok(None);
        }
        let Some(fused) = conv(&ops::conv_bn::NormArgs { gamma, beta, eps: EPS, slope, shuffled })? else {
            return Ok(None);
        };
        update_running((mean, var), fused.count, (&fused.mean, &fused.var))?;
        Ok(Some(fused.y))
    }

    /// [`Self::forward_leaky`] of `pixel_shuffle(z)`: one op for a
    /// BatchNorm in training on the CPU ([`ops::batch_norm::train_shuffled`]).
    pub fn forward_leaky_shuffled(&self, z: &Tensor, train: bool, slope: f64) -> Result<Tensor> {
        if let Norm::Batch { gamma, beta, mean, var } = self
            && train
            && let Some(fused) = ops::batch_norm::train_shuffled(z, gamma, beta, EPS, slope)?
        {
            update_running((mean, var), fused.count, (&fused.mean, &fused.var))?;
            return Ok(fused.y);
        }
        self.forward_leaky(&pixel_shuffle(z)?, train, slope)
    }
}

/// BatchNorm with `gamma` and `beta` and its running `(mean, var)`, then
/// LeakyReLU, as [`Norm::forward_leaky`].
fn batch_norm_leaky(
    x: &Tensor,
    (gamma, beta): (&Tensor, &Tensor),
    (mean, var): (&Tensor, &Tensor),
    train: bool,
    slope: f64,
) -> Result<Tensor> {
    if train && let Some(fused) = ops::batch_norm::train(x, gamma, beta, EPS, slope)? {
        update_running((mean, var), fused.count, (&fused.mean, &fused.var))?;
        return Ok(fused.y);
    }
    let (m, v) = if train {
        let (n, c, h, w) = x.dims4()?;
        let flat = x.transpose(0, 1)?.reshape((c, n * h * w))?;
        let m = flat.mean(1)?;
        let v = flat.broadcast_sub(&m.unsqueeze(1)?)?.sqr()?.mean(1)?;
        update_running((mean, var), values_per_channel(x)?, (&m, &v))?;
        (m, v)
    } else {
        (mean.clone(), var.clone())
    };
    let scale = (gamma / (v + EPS)?.sqrt()?)?;
    let shift = (beta - (&m * &scale)?)?;
    ops::bias::scale_shift(x, &scale, &shift, slope)
}

/// The running `(mean, var)` moved toward a training pass's batch mean and
/// biased variance over `count` values per channel (the unbiased
/// variance, as PyTorch does).
fn update_running((mean, var): (&Tensor, &Tensor), count: usize, (m, v): (&Tensor, &Tensor)) -> Result<()> {
    let count = count as f64;
    let unbiased = v.affine(count / (count - 1.0).max(1.0), 0.0)?;
    update_buffer(mean, &(mean.affine(1.0 - BN_MOMENTUM, 0.0)? + m.affine(BN_MOMENTUM, 0.0)?)?)?;
    update_buffer(var, &(var.affine(1.0 - BN_MOMENTUM, 0.0)? + unbiased.affine(BN_MOMENTUM, 0.0)?)?)
}

/// Values per channel of `x` (N, C, H, W): N H W.
fn values_per_channel(x: &Tensor) -> Result<usize> {
    let (n, _, h, w) = x.dims4()?;
    Ok(n * h * w)
}

/// Inverted dropout with a mask drawn from `rng`: kept units are scaled by
/// 1/(1-p) so the expected activation does not change.
pub fn dropout(x: &Tensor, p: f64, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let u = uniform(rng, x.dims(), 0.0, 1.0, x.device())?;
    let keep = u.ge(p)?.to_dtype(x.dtype())?;
    (x * keep)?.affine(1.0 / (1.0 - p), 0.0)
}

/// Appends one channel holding the mean over features of the per-feature
/// standard deviation across the batch (Karras et al. 2018, tip 15): a batch
/// of near-identical fakes is then easy for D to spot.
pub fn minibatch_stddev(x: &Tensor) -> Result<Tensor> {
    let (n, _, h, w) = x.dims4()?;
    let centered = x.broadcast_sub(&x.mean_keepdim(0)?)?;
    let std = (centered.sqr()?.mean_keepdim(0)? + 1e-8)?.sqrt()?;
    let s = std.mean_all()?.reshape((1, 1, 1, 1))?.broadcast_as((n, 1, h, w))?;
    Tensor::cat(&[x, &s.contiguous()?], 1)
}
