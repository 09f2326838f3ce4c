//! The DCGAN generator: z (plus a class embedding when conditional) is
//! projected to a small feature map, doubled `levels` times, and squashed by
//! tanh into [-1, 1] (tip 1).

use candle_core::{Result, Tensor};

use super::blocks::{Conv, ConvTranspose, Linear, Norm, Pass, ResizeConv, dropout};
use super::config::{ModelConfig, Upsample};
use super::params::{Init, Params, Role, Scope, randn};
use crate::ops;
use crate::ops::activation::Act;
use crate::ops::shuffle::pixel_shuffle;

/// One 2x upsampling step.
enum Up {
    Transpose(ConvTranspose),
    Shuffle(Conv),
    Nearest(ResizeConv),
}

impl Up {
    fn new(s: &mut Scope, kind: Upsample, cin: usize, cout: usize) -> Result<Self> {
        Ok(match kind {
            Upsample::ConvTranspose => Up::Transpose(ConvTranspose::new(s, cin, cout)?),
            Upsample::PixelShuffle => Up::Shuffle(Conv::new(s, cin, cout * 4, 3, 1, 1, false)?),
            Upsample::NearestConv => Up::Nearest(ResizeConv::new(s, cin, cout)?),
        })
    }

    /// The upsampled `x`, then `act` (which, elementwise, commutes with the
    /// pixel shuffle, so the convolution's op applies it).
    fn forward(&self, x: &Tensor, act: Act) -> Result<Tensor> {
        match self {
            Up::Transpose(c) => c.forward(x, act),
            Up::Shuffle(c) => pixel_shuffle(&c.forward(x, false, act)?),
            Up::Nearest(c) => c.forward(x, act),
        }
    }

    /// The upsampled `x` through `norm` and its LeakyReLU with `slope`:
    /// the convolution, the norm and the activation (and a pixel shuffle
    /// between them) as one op where they can ([`Conv::forward_normed`]).
    fn forward_normed(&self, x: &Tensor, norm: &Norm, train: bool, slope: f64) -> Result<Tensor> {
        match self {
            Up::Transpose(c) => c.forward_normed(x, train, norm, slope),
            Up::Shuffle(c) => c.forward_normed(x, train, norm, (slope, true)),
            Up::Nearest(c) => norm.forward_leaky(&c.forward(x, Act::Identity)?, train, slope),
        }
    }

    /// [`Self::forward_normed`], then `next`'s [`Self::forward`] with
    /// `act`, as one op where both are transposed convolutions or both
    /// pixel shuffles and `forward_normed` would fuse
    /// ([`ops::conv::batch_norm_then`]); None elsewhere.
    fn forward_normed_then(
        &self,
        x: &Tensor,
        (norm, train, slope): (&Norm, bool, f64),
        (next, act): (&Up, Act),
    ) -> Result<Option<Tensor>> {
        match (self, next) {
            (Up::Transpose(c), Up::Transpose(n)) => c.normed_then(x, train, norm, slope, (n.layer(), act)),
            (Up::Shuffle(c), Up::Shuffle(n)) => {
                // G's convolutions are never spectrally normalized: no
                // power iteration runs here.
                let w = n.weight(train)?;
                let y = c.normed_then(x, train, norm, (slope, true), (n.layer(&w), act))?;
                y.map(|y| pixel_shuffle(&y)).transpose()
            }
            _ => Ok(None),
        }
    }
}

/// The most images a forward pass runs with the pool's other threads
/// spinning: the explorer's probe (2, slerp and lerp) and strip (16).
/// Its latency test, two threads, two alternating runs: the probe's
/// generator 0.89-1.11 ms asleep between ops, 0.68-0.86 ms spinning.
const AWAKE_MAX_IMAGES: usize = 16;

/// Channels of G's feature maps after `level` upsamplings (0: the
/// projection's).
fn width(cfg: &ModelConfig, level: usize) -> usize {
    cfg.g_width << (cfg.levels() - 1 - level)
}

/// The generator network.
pub struct Generator {
    cfg: ModelConfig,
    embed: Option<Tensor>,
    proj: Linear,
    proj_norm: Norm,
    ups: Vec<Up>,
    norms: Vec<Norm>,
}

impl Generator {
    /// Builds G for `cfg`, taking its weights from `params` under prefix `g`.
    pub fn new(cfg: &ModelConfig, params: &mut dyn Params) -> Result<Self> {
        let mut s = Scope::new(params, "g");
        let levels = cfg.levels();
        let width = |level| width(cfg, level);
        let embed = if cfg.conditional() {
            Some(s.get("embed", &[cfg.num_classes, cfg.class_embed_dim], Init::Normal(0.0, 1.0), Role::Trainable)?)
        } else {
            None
        };
        let zin = cfg.z_dim + if cfg.conditional() { cfg.class_embed_dim } else { 0 };
        let base = cfg.base_size();
        let proj = Linear::new(&mut s.pp("proj"), zin, width(0) * base * base, false)?;
        let proj_norm = Norm::new(&mut s.pp("proj_norm"), cfg.g_norm, width(0))?;
        let mut ups = Vec::with_capacity(levels);
        let mut norms = Vec::with_capacity(levels - 1);
        for level in 0..levels {
            let last = level + 1 == levels;
            let cout = if last { cfg.channels } else { width(level + 1) };
            ups.push(Up::new(&mut s.pp(format!("up{level}")), cfg.upsample, width(level), cout)?);
            if !last {
                norms.push(Norm::new(&mut s.pp(format!("norm{level}")), cfg.g_norm, cout)?);
            }
        }
        Ok(Self { cfg: cfg.clone(), embed, proj, proj_norm, ups, norms })
    }

    /// The architecture.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Images (N, C, R, R) in [-1, 1] from latents `z` (N, z_dim) and, for a
    /// conditional model, class indices `labels` (N, u32). Batches run on a
    /// rayon worker on the CPU ([`ops::on_cpu_pool`]), up to
    /// 16 (`AWAKE_MAX_IMAGES`) with the other threads kept spinning, as their
    /// ops are short ([`ops::on_cpu_pool_awake`]). A single image on one
    /// thread stays on this one, where it measured faster (0.9 against 1.0
    /// ms at 32 px): the hand-off to the pool and back costs more than it
    /// saves. There it runs as the one worker of a pool of its own
    /// ([`ops::on_this_thread`]), so that its ops do not each hand their
    /// work to the pool instead.
    pub fn forward(&self, z: &Tensor, labels: Option<&Tensor>, pass: &mut Pass) -> Result<Tensor> {
        let n = z.dim(0)?;
        if n == 1 && rayon::current_num_threads() == 1 {
            return ops::on_this_thread(z.device(), || self.forward_here(z, labels, pass));
        }
        if n <= AWAKE_MAX_IMAGES {
            return ops::on_cpu_pool_awake(z.device(), || self.forward_here(z, labels, pass));
        }
        ops::on_cpu_pool(z.device(), || self.forward_here(z, labels, pass))
    }

    fn forward_here(&self, z: &Tensor, labels: Option<&Tensor>, pass: &mut Pass) -> Result<Tensor> {
        let z = match (&self.embed, labels) {
            (Some(e), Some(l)) => Tensor::cat(&[z, &e.index_select(l, 0)?], 1)?,
            (Some(_), None) => candle_core::bail!("this generator is conditional: give class labels"),
            (None, _) => z.clone(),
        };
        let base = self.cfg.base_size();
        let slope = self.cfg.g_leaky_slope;
        let out = (width(&self.cfg, 0), base, base);
        let x = self.proj.forward_normed(&z, pass.train, (&self.proj_norm, slope), out)?;
        let mut x = self.hidden(x, 0, pass)?;
        let (last, ups) = self.ups.split_last().expect("a generator upsamples at least once");
        for (level, (up, norm)) in ups.iter().zip(&self.norms).enumerate() {
            // The last hidden layer and the RGB layer as one op where
            // nothing runs between them.
            if level + 1 == ups.len()
                && self.perturbations(level + 1, pass) == (false, false)
                && let Some(y) = up.forward_normed_then(&x, (norm, pass.train, slope), (last, Act::Tanh))?
            {
                return Ok(y);
            }
            x = self.hidden(up.forward_normed(&x, norm, pass.train, slope)?, level + 1, pass)?;
        }
        last.forward(&x, Act::Tanh)
    }

    /// Whether [`Self::hidden`] applies (dropout, layer noise) to hidden
    /// layer `layer` in `pass`.
    fn perturbations(&self, layer: usize, pass: &Pass) -> (bool, bool) {
        if pass.rng.is_none() {
            return (false, false);
        }
        let dropout = pass.dropout && self.cfg.g_dropout > 0.0 && layer < self.cfg.g_dropout_layers;
        (dropout, pass.train && self.cfg.g_layer_noise > 0.0)
    }

    /// A hidden layer's output `x` (normed and activated), then dropout and
    /// layer noise where configured. `layer` counts hidden layers from the
    /// coarsest (the projection is 0).
    fn hidden(&self, mut x: Tensor, layer: usize, pass: &mut Pass) -> Result<Tensor> {
        let (drops, noises) = self.perturbations(layer, pass);
        if let Some(rng) = pass.rng.as_deref_mut() {
            if drops {
                x = dropout(&x, self.cfg.g_dropout, rng)?;
            }
            if noises {
                x = (&x + randn(rng, x.dims(), self.cfg.g_layer_noise as f32, x.device())?)?;
            }
        }
        Ok(x)
    }
}
