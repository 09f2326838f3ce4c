//! The DCGAN discriminator: halves the resolution `levels` times with
//! LeakyReLU (tip 5), then a linear real/fake logit and, for conditional
//! models, an auxiliary classifier head (AC-GAN, tip 12).

use candle_core::{Result, Tensor};

use super::blocks::{Conv, Linear, Norm, minibatch_stddev};
use super::config::{Downsample, ModelConfig, NormKind};
use super::params::{Init, Params, Role, Scope};
use crate::ops::activation::Act;
use crate::ops::conv::Layer;

/// What D says about a batch.
pub struct Verdict {
    /// Real/fake logits, shape (N).
    pub logits: Tensor,
    /// Class logits (N, classes) for conditional models.
    pub class_logits: Option<Tensor>,
}

/// One 2x downsampling block.
struct DownBlock {
    conv: Conv,
    pool: bool,
    norm: Norm,
}

/// D's convolutional body, shared with the VAE-GAN encoder: halves the
/// resolution `levels` times down to the base size.
pub(crate) struct DownStack {
    blocks: Vec<DownBlock>,
    slope: f64,
    /// Channels of the output.
    pub(crate) channels: usize,
}

impl DownStack {
    /// Blocks `down0..` under `s`, from `cin` input channels.
    pub(crate) fn new(s: &mut Scope, cfg: &ModelConfig, cin: usize, spectral_norm: bool) -> Result<Self> {
        let mut cin = cin;
        let mut blocks = Vec::new();
        for level in 0..cfg.levels() {
            let cout = cfg.d_width << level;
            let mut b = s.pp(format!("down{level}"));
            let conv = match cfg.downsample {
                Downsample::StridedConv => Conv::new(&mut b, cin, cout, 4, 2, 1, spectral_norm)?,
                Downsample::AvgPool => Conv::new(&mut b, cin, cout, 3, 1, 1, spectral_norm)?,
            };
            // No norm on the first layer (DCGAN), so D sees raw pixel statistics.
            let kind = if level == 0 { NormKind::None } else { cfg.d_norm };
            let norm = Norm::new(&mut b.pp("norm"), kind, cout)?;
            blocks.push(DownBlock { conv, pool: cfg.downsample == Downsample::AvgPool, norm });
            cin = cout;
        }
        Ok(Self { blocks, slope: cfg.d_leaky_slope, channels: cin })
    }

    /// (N, C, R, R) to (N, channels, base, base). A first layer without a
    /// norm runs as one op with the normed layer after it where it can
    /// ([`Conv::after`]).
    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.forward_then(x, train, None)?.0)
    }

    /// [`Self::forward`], then `next` (a layer and its activation) where
    /// given and it runs as one op with the last block
    /// ([`Conv::normed_then`]): the output, and whether it is `next`'s.
    pub(crate) fn forward_then(&self, x: &Tensor, train: bool, next: Option<(Layer, Act)>) -> Result<(Tensor, bool)> {
        let mut h = x.clone();
        let mut blocks = self.blocks.iter().peekable();
        while let Some(b) = blocks.next() {
            let leaky = Act::Leaky(self.slope);
            if let (Norm::None, false, Some(next)) = (&b.norm, b.pool, blocks.peek())
                && !next.pool
                && let Some(y) = next.conv.after((&b.conv, leaky), &h, train, &next.norm, self.slope)?
            {
                h = y;
                blocks.next();
                continue;
            }
            if let (None, false, Some(next)) = (blocks.peek(), b.pool, next)
                && let Some(y) = b.conv.normed_then(&h, train, &b.norm, (self.slope, false), next)?
            {
                return Ok((y, true));
            }
            h = match (&b.norm, b.pool) {
                (Norm::None, false) => b.conv.forward(&h, train, leaky)?,
                (norm, false) => b.conv.forward_normed(&h, train, norm, (self.slope, false))?,
                (norm, true) => {
                    let y = b.conv.forward(&h, train, Act::Identity)?.avg_pool2d(2)?;
                    norm.forward_leaky(&y, train, self.slope)?
                }
            };
        }
        Ok((h, false))
    }
}

/// The discriminator network.
pub struct Discriminator {
    cfg: ModelConfig,
    embed: Option<Tensor>,
    body: DownStack,
    head: Linear,
    aux: Option<Linear>,
}

impl Discriminator {
    /// Builds D for `cfg`, taking its weights from `params` under prefix `d`.
    pub fn new(cfg: &ModelConfig, params: &mut dyn Params) -> Result<Self> {
        let mut s = Scope::new(params, "d");
        let base = cfg.base_size();
        let sn = cfg.spectral_norm;
        // Tip 16: the class embedding becomes one extra input channel.
        let embed = if cfg.conditional() {
            Some(s.get("embed", &[cfg.num_classes, base * base], Init::Normal(0.0, 1.0), Role::Trainable)?)
        } else {
            None
        };
        let body = DownStack::new(&mut s, cfg, cfg.channels + usize::from(cfg.conditional()), sn)?;
        let features = (body.channels + usize::from(cfg.minibatch_stddev)) * base * base;
        let head = Linear::new(&mut s.pp("head"), features, 1, sn)?;
        let aux =
            if cfg.conditional() { Some(Linear::new(&mut s.pp("aux"), features, cfg.num_classes, sn)?) } else { None };
        Ok(Self { cfg: cfg.clone(), embed, body, head, aux })
    }

    /// Judges images `x` (N, C, R, R); `labels` (N, u32) are required for a
    /// conditional model. Call it on all-real or all-fake batches when D uses
    /// BatchNorm (tip 4): the trainer does.
    pub fn forward(&self, x: &Tensor, labels: Option<&Tensor>, train: bool) -> Result<Verdict> {
        let (n, _, r, _) = x.dims4()?;
        let input = match (&self.embed, labels) {
            (Some(e), Some(l)) => {
                let base = self.cfg.base_size();
                let plane = e.index_select(l, 0)?.reshape((n, 1, base, base))?.upsample_nearest2d(r, r)?;
                Tensor::cat(&[x, &plane], 1)?
            }
            (Some(_), None) => candle_core::bail!("this discriminator is conditional: give class labels"),
            (None, _) => x.clone(),
        };
        if !self.cfg.minibatch_stddev && self.aux.is_none() {
            return Ok(Verdict { logits: self.judge_by_head(&input, train)?, class_logits: None });
        }
        let mut h = self.body.forward(&input, train)?;
        if self.cfg.minibatch_stddev {
            h = minibatch_stddev(&h)?;
        }
        let flat = h.flatten_from(1)?;
        let logits = self.head.forward(&flat, train)?.squeeze(1)?;
        let class_logits = match &self.aux {
            Some(a) => Some(a.forward(&flat, train)?),
            None => None,
        };
        Ok(Verdict { logits, class_logits })
    }

    /// The logits (N) of the body's output by the head alone. The head
    /// over the flattened (channels, base, base) features is a convolution
    /// by its weight as a (1, channels, base, base) kernel, so it runs as
    /// one op with the body's last layer where that is a BatchNorm's
    /// ([`DownStack::forward_then`]), the linear layer elsewhere.
    fn judge_by_head(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let w = self.head.weight(train)?;
        let base = self.cfg.base_size();
        let kernel = w.reshape((1, self.body.channels, base, base))?;
        let layer = Layer { w: &kernel, b: self.head.bias(), geom: (1, 0), transposed: false, kept: None };
        match self.body.forward_then(x, train, Some((layer, Act::Identity)))? {
            (y, true) => y.flatten_all(),
            (h, false) => self.head.apply(&h.flatten_from(1)?, &w)?.squeeze(1),
        }
    }
}
