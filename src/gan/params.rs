//! Where layer weights come from. A network is built by one constructor that
//! asks a [`Params`] source for each named tensor; the source decides whether
//! to draw fresh weights (training), hand out loaded ones (a model file), or
//! only record names and shapes (validating a file before reading it).

use std::collections::BTreeMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// How a fresh tensor is initialised (DCGAN: weights ~ N(0, 0.02)).
#[derive(Debug, Clone, Copy)]
pub enum Init {
    /// Normal with this mean and std.
    Normal(f32, f32),
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// A unit vector in a random direction (spectral-norm power iteration).
    UnitRandom,
}

/// Whether the optimizer updates a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Learned by gradient descent.
    Trainable,
    /// State updated in the forward pass (running statistics, power-iteration vectors).
    Buffer,
}

/// A source of named tensors.
pub trait Params {
    /// The tensor called `name` with `shape`.
    fn get(&mut self, name: &str, shape: &[usize], init: Init, role: Role) -> Result<Tensor>;
    /// The device the network will run on.
    fn device(&self) -> &Device;
    /// Whether the tensors never change, so that layers may keep what they
    /// derive from them (a folded or reordered kernel) for good.
    fn constant(&self) -> bool {
        false
    }
}

/// A view of a [`Params`] under a name prefix, like candle's `VarBuilder::pp`.
pub struct Scope<'a> {
    params: &'a mut dyn Params,
    prefix: String,
}

impl<'a> Scope<'a> {
    /// The root scope, with `prefix` (e.g. `"g"`).
    pub fn new(params: &'a mut dyn Params, prefix: &str) -> Self {
        Self { params, prefix: prefix.to_string() }
    }

    /// A child scope `prefix.name`.
    pub fn pp(&mut self, name: impl std::fmt::Display) -> Scope<'_> {
        Scope { params: &mut *self.params, prefix: format!("{}.{name}", self.prefix) }
    }

    /// The tensor `prefix.name`.
    pub fn get(&mut self, name: &str, shape: &[usize], init: Init, role: Role) -> Result<Tensor> {
        let full = format!("{}.{name}", self.prefix);
        self.params.get(&full, shape, init, role)
    }

    /// The device.
    pub fn device(&self) -> &Device {
        self.params.device()
    }

    /// Whether the tensors never change ([`Params::constant`]).
    pub fn constant(&self) -> bool {
        self.params.constant()
    }
}

/// Fresh weights drawn from a seeded RNG, each wrapped in a [`Var`].
pub struct FreshParams<'r> {
    rng: &'r mut ChaCha8Rng,
    device: Device,
    /// Every tensor created, in creation order, with its role.
    pub vars: Vec<(String, Var, Role)>,
}

impl<'r> FreshParams<'r> {
    /// Draws from `rng`, so the same seed gives the same network.
    pub fn new(rng: &'r mut ChaCha8Rng, device: &Device) -> Self {
        Self { rng, device: device.clone(), vars: Vec::new() }
    }
}

impl Params for FreshParams<'_> {
    fn get(&mut self, name: &str, shape: &[usize], init: Init, role: Role) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal(mean, std) => normal_vec(self.rng, n, mean, std),
            Init::UnitRandom => {
                let v = normal_vec(self.rng, n, 0.0, 1.0);
                let len = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.into_iter().map(|x| x / len).collect()
            }
        };
        let var = Var::from_tensor(&Tensor::from_vec(data, shape, &self.device)?)?;
        self.vars.push((name.to_string(), var.clone(), role));
        Ok(var.as_tensor().clone())
    }

    fn device(&self) -> &Device {
        &self.device
    }
}

/// Tensors already in memory (a loaded model file), checked by name and shape.
pub struct LoadedParams {
    tensors: BTreeMap<String, Tensor>,
    device: Device,
    constant: bool,
}

impl LoadedParams {
    /// Wraps a name -> tensor map whose tensors never change: a file's, or
    /// copies.
    pub fn new(tensors: BTreeMap<String, Tensor>, device: &Device) -> Self {
        Self { tensors, device: device.clone(), constant: true }
    }

    /// Wraps views of variables (`Var::as_tensor().detach()`), which share
    /// their storage and so change with every optimizer step: layers built
    /// from them derive nothing once.
    pub fn views(tensors: BTreeMap<String, Tensor>, device: &Device) -> Self {
        Self { tensors, device: device.clone(), constant: false }
    }

    /// Names the network never asked for; a complete file leaves none.
    pub fn unused(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }
}

impl Params for LoadedParams {
    fn get(&mut self, name: &str, shape: &[usize], _: Init, _: Role) -> Result<Tensor> {
        let t = self.tensors.remove(name).ok_or_else(|| candle_core::Error::Msg(format!("missing tensor `{name}`")))?;
        if t.dims() != shape {
            candle_core::bail!("tensor `{name}` has shape {:?}, expected {shape:?}", t.dims());
        }
        t.to_device(&self.device)
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn constant(&self) -> bool {
        self.constant
    }
}

/// Records the names and shapes a network asks for without allocating its
/// weights: each request gets a broadcast scalar.
#[derive(Default)]
pub struct ShapeRecorder {
    /// `(name, shape)` in request order.
    pub shapes: Vec<(String, Vec<usize>)>,
}

impl Params for ShapeRecorder {
    fn get(&mut self, name: &str, shape: &[usize], _: Init, _: Role) -> Result<Tensor> {
        self.shapes.push((name.to_string(), shape.to_vec()));
        Tensor::zeros((), DType::F32, &Device::Cpu)?.broadcast_as(shape)
    }

    fn device(&self) -> &Device {
        &Device::Cpu
    }
}

/// `n` normal samples.
pub fn normal_vec(rng: &mut ChaCha8Rng, n: usize, mean: f32, std: f32) -> Vec<f32> {
    match Normal::new(mean, std) {
        Ok(d) => (0..n).map(|_| d.sample(rng)).collect(),
        Err(_) => vec![mean; n],
    }
}

/// A tensor of normal samples drawn from `rng` (not candle's unseedable CPU RNG),
/// so training is reproducible and resumable.
pub fn randn(rng: &mut ChaCha8Rng, shape: &[usize], std: f32, device: &Device) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_vec(normal_vec(rng, n, 0.0, std), shape, device)
}

/// A tensor of uniform samples in `[lo, hi)` from `rng`.
pub fn uniform(rng: &mut ChaCha8Rng, shape: &[usize], lo: f32, hi: f32, device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| if hi > lo { rng.random_range(lo..hi) } else { lo }).collect();
    Tensor::from_vec(data, shape, device)
}
