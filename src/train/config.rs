//! `TrainConfig`: every option of the trainer, one per GANHACKS tip, with its
//! default and a doc comment. `ganscope train --print-config` prints it as
//! commented TOML; `--config FILE` and `--set key=value` override it.

use documented::{DocumentedFields, DocumentedVariants};
use serde::{Deserialize, Serialize};

use crate::gan::ModelConfig;
use crate::gan::config::NormKind;
use crate::latent::Prior;

/// The adversarial loss (tip 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// G maximizes log D(G(z)): G is trained with flipped labels (fakes labelled real).
    Nonsaturating,
    /// G minimizes log(1 - D(G(z))), the original minimax game (saturates early).
    Minimax,
    /// Hinge loss (Lim & Ye 2017; used with spectral norm by Miyato et al.).
    Hinge,
    /// Wasserstein loss with gradient penalty (Gulrajani et al. 2017).
    Wasserstein,
}

/// D's optimizer (tip 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Adam with `beta1`, `beta2`.
    Adam,
    /// Plain SGD.
    Sgd,
}

/// Thresholds of the health monitor (tip 10).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DocumentedFields)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Steps in the sliding window the alarms look at.
    pub window: usize,
    /// D loss below this, on average over the window, means D has won.
    pub d_loss_floor: f64,
    /// Gradient norm above this in G or D is an explosion.
    pub grad_norm_limit: f64,
    /// Consecutive steps over `grad_norm_limit` before the alarm: D's norm spikes
    /// past 100 now and then in healthy BCE runs; an explosion stays there.
    pub grad_norm_steps: usize,
    /// Standard deviation of D's loss over the window above this is oscillation.
    pub d_loss_std_limit: f64,
    /// Fake-batch diversity below this fraction of the real batch's is mode collapse.
    pub diversity_floor: f64,
    /// Steps before the mode-collapse alarm may fire: a fresh G's samples all look alike.
    pub grace_steps: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            window: 50,
            d_loss_floor: 0.05,
            grad_norm_limit: 100.0,
            grad_norm_steps: 5,
            d_loss_std_limit: 1.5,
            diversity_floor: 0.15,
            grace_steps: 200,
        }
    }
}

/// Everything the trainer does, with the GANHACKS tip each option implements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DocumentedFields)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// The dataset: `builtin:NAME`, an image folder (sub-folders are classes) or a folder of IDX files.
    pub data: String,
    /// Seed for weights, latents, batches, labels, noise and dropout.
    pub seed: u64,
    /// G optimizer steps to train (the run's length).
    pub steps: u64,
    /// Images per batch; D sees one all-real and one all-fake batch of this size (tip 4).
    pub batch_size: usize,
    /// Tip 3: latent prior; `sphere` normalizes N(0, I) samples onto the sphere.
    pub prior: Prior,
    /// Tip 2: `nonsaturating` (G trained with flipped labels), `minimax`, `hinge`, `wasserstein` (+GP).
    pub loss: LossKind,
    /// Gradient-penalty weight for the `wasserstein` loss.
    pub gp_weight: f64,
    /// Tip 6: real targets for D are drawn uniformly from this range (soft labels).
    pub real_label: [f64; 2],
    /// Tip 6: fake targets for D are drawn uniformly from this range.
    pub fake_label: [f64; 2],
    /// Tip 6: probability that a target given to D is flipped (noisy labels).
    pub label_flip: f64,
    /// Tip 13: std of Gaussian instance noise added to D's inputs at step 0.
    pub instance_noise: f64,
    /// Tip 13: steps over which the instance noise decays linearly to zero.
    pub instance_noise_steps: u64,
    /// Tip 8: past fakes kept in the experience-replay buffer (0 turns replay off).
    pub replay_size: usize,
    /// Tip 8: fraction of each fake batch drawn from the replay buffer.
    pub replay_fraction: f64,
    /// Tip 14: D steps per G step (fixed: tip 11 says never balance on loss thresholds).
    pub d_steps_per_g: usize,
    /// Tip 9: learning rate of G's Adam.
    pub lr_g: f64,
    /// Tip 9: learning rate of D's optimizer.
    pub lr_d: f64,
    /// Tip 9: Adam's beta1 (0.5 per DCGAN).
    pub beta1: f64,
    /// Tip 9: Adam's beta2.
    pub beta2: f64,
    /// Tip 9: D's optimizer, `adam` or `sgd`.
    pub d_optimizer: OptimizerKind,
    /// Decay of the exponential moving average of G's weights (0 turns EMA off).
    pub ema_decay: f64,
    /// Tip 12: weight of the AC-GAN class loss for conditional models.
    pub aux_weight: f64,
    /// Train a class-conditional model (AC-GAN) when the dataset has labels (tip 12).
    pub conditional: bool,
    /// Tip 7: the VAE-GAN hybrid: an encoder maps real images to z, and G is
    /// also trained to reconstruct them (plus a KL term toward N(0, I)).
    pub vae_gan: bool,
    /// Tip 7: weight of the VAE-GAN reconstruction loss (mean squared pixel error).
    pub recon_weight: f64,
    /// Tip 7: weight of the VAE-GAN KL term (mean over latent dimensions).
    pub kl_weight: f64,
    /// Steps between metrics lines in metrics.jsonl.
    pub log_every: u64,
    /// Steps between sample grids of the fixed evaluation noise.
    pub sample_every: u64,
    /// Steps between checkpoints (one is always written at the end).
    pub checkpoint_every: u64,
    /// Images in the fixed-noise sample grid (latents of seeds 0..N).
    pub grid_size: usize,
    /// Background colour, as RGB, that transparent dataset images are composited on.
    pub background: [u8; 3],
    /// Tip 10: the health monitor's thresholds.
    pub health: HealthConfig,
    /// Architecture (resolution 28/32/64, widths, norms, up/down-sampling, dropout, noise, ...).
    pub model: ModelConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            data: "builtin:digits".into(),
            seed: 0,
            steps: 5000,
            batch_size: 64,
            prior: Prior::Sphere,
            loss: LossKind::Nonsaturating,
            gp_weight: 10.0,
            real_label: [0.8, 1.0],
            fake_label: [0.0, 0.1],
            label_flip: 0.02,
            instance_noise: 0.1,
            instance_noise_steps: 2000,
            replay_size: 512,
            replay_fraction: 0.1,
            d_steps_per_g: 1,
            lr_g: 2e-4,
            lr_d: 2e-4,
            beta1: 0.5,
            beta2: 0.999,
            d_optimizer: OptimizerKind::Adam,
            ema_decay: 0.999,
            aux_weight: 1.0,
            conditional: false,
            vae_gan: false,
            recon_weight: 1.0,
            kl_weight: 0.05,
            log_every: 10,
            sample_every: 250,
            checkpoint_every: 500,
            grid_size: 64,
            background: [255, 255, 255],
            health: HealthConfig::default(),
            model: ModelConfig::default(),
        }
    }
}

/// Named starting points for the training panel and `--preset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, DocumentedVariants)]
pub enum Preset {
    /// Radford et al.'s DCGAN with none of the extra tricks.
    PlainDcgan,
    /// The defaults: soft and noisy labels, instance noise, replay, EMA.
    Recommended,
    /// The recommended recipe plus AC-GAN conditioning on class labels.
    Conditional,
}

impl Preset {
    /// All presets.
    pub const ALL: [Preset; 3] = [Preset::PlainDcgan, Preset::Recommended, Preset::Conditional];

    /// A display name.
    pub fn name(self) -> &'static str {
        match self {
            Preset::PlainDcgan => "plain DCGAN",
            Preset::Recommended => "ganhacks recommended",
            Preset::Conditional => "conditional (AC-GAN)",
        }
    }

    /// The preset's config, keeping `base`'s data-dependent fields (resolution,
    /// channels, steps, seed).
    pub fn apply(self, base: &TrainConfig) -> TrainConfig {
        let mut c = TrainConfig {
            data: base.data.clone(),
            seed: base.seed,
            steps: base.steps,
            background: base.background,
            model: ModelConfig {
                resolution: base.model.resolution,
                channels: base.model.channels,
                ..base.model.clone()
            },
            ..TrainConfig::default()
        };
        match self {
            Preset::PlainDcgan => {
                c.prior = Prior::Gaussian;
                c.real_label = [1.0, 1.0];
                c.fake_label = [0.0, 0.0];
                c.label_flip = 0.0;
                c.instance_noise = 0.0;
                c.replay_size = 0;
                c.replay_fraction = 0.0;
                c.ema_decay = 0.0;
                c.model.g_norm = NormKind::Batch;
                c.model.d_norm = NormKind::Batch;
            }
            Preset::Recommended => {}
            Preset::Conditional => c.conditional = true,
        }
        c
    }
}

impl TrainConfig {
    /// Checks every option; the message names the option and the allowed range.
    pub fn validate(&self) -> Result<(), String> {
        self.model.validate().map_err(|e| format!("model.{e}"))?;
        let positive = [
            ("steps", self.steps),
            ("log_every", self.log_every),
            ("sample_every", self.sample_every),
            ("checkpoint_every", self.checkpoint_every),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if !(1..=4096).contains(&self.batch_size) {
            return Err(format!("batch_size = {} is out of range 1..=4096", self.batch_size));
        }
        if self.batch_size < 2 && (self.model.g_norm == NormKind::Batch || self.model.d_norm == NormKind::Batch) {
            return Err("batch_size must be at least 2 with BatchNorm".into());
        }
        for (name, v) in [("lr_g", self.lr_g), ("lr_d", self.lr_d)] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(format!("{name} = {v} must be in (0, 1]"));
            }
        }
        for (name, v) in [("beta1", self.beta1), ("beta2", self.beta2), ("ema_decay", self.ema_decay)] {
            if !(0.0..1.0).contains(&v) {
                return Err(format!("{name} = {v} must be in [0, 1)"));
            }
        }
        for (name, v) in [("label_flip", self.label_flip), ("replay_fraction", self.replay_fraction)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} = {v} must be in [0, 1]"));
            }
        }
        for (name, [lo, hi]) in [("real_label", self.real_label), ("fake_label", self.fake_label)] {
            if !(lo <= hi && lo >= -1.0 && hi <= 2.0) {
                return Err(format!("{name} = [{lo}, {hi}] must be an ordered range within [-1, 2]"));
            }
        }
        if !(0.0..=10.0).contains(&self.instance_noise) {
            return Err(format!("instance_noise = {} must be in [0, 10]", self.instance_noise));
        }
        if !(1..=100).contains(&self.d_steps_per_g) {
            return Err(format!("d_steps_per_g = {} is out of range 1..=100", self.d_steps_per_g));
        }
        if self.replay_size > 100_000 {
            return Err(format!("replay_size = {} is over 100000", self.replay_size));
        }
        if !(1..=1024).contains(&self.grid_size) {
            return Err(format!("grid_size = {} is out of range 1..=1024", self.grid_size));
        }
        if !(0.0..=1000.0).contains(&self.gp_weight) || !(0.0..=100.0).contains(&self.aux_weight) {
            return Err("gp_weight must be in [0, 1000] and aux_weight in [0, 100]".into());
        }
        if !(0.0..=100.0).contains(&self.recon_weight) || !(0.0..=100.0).contains(&self.kl_weight) {
            return Err("recon_weight and kl_weight must be in [0, 100]".into());
        }
        if self.health.window < 2 {
            return Err("health.window must be at least 2".into());
        }
        Ok(())
    }

    /// Whether option `key` may change mid-run: everything but the
    /// architecture and what sizes the run's state (seed, batch, buffers).
    pub fn steerable(key: &str) -> bool {
        !key.starts_with("model.")
            && !["data", "seed", "batch_size", "replay_size", "ema_decay", "d_optimizer", "conditional", "vae_gan"]
                .contains(&key)
    }

    /// Parses TOML (a full or partial config) and validates it.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let cfg: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Overrides one option: `key` is dotted (`model.g_width`, `health.window`)
    /// and `value` is a TOML value (`0.3`, `true`, `"hinge"`, `[0.7, 1.2]`);
    /// a bare word is taken as a string.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let mut table = toml::Table::try_from(&*self).map_err(|e| e.to_string())?;
        let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_string()));
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().filter(|k| !k.is_empty()).ok_or_else(|| format!("empty key in `{key}`"))?;
        let mut node = &mut table;
        for p in parts {
            node = node.get_mut(p).and_then(|v| v.as_table_mut()).ok_or_else(|| format!("unknown option `{key}`"))?;
        }
        if !node.contains_key(last) {
            return Err(format!("unknown option `{key}` (see `ganscope train --print-config`)"));
        }
        node.insert(last.to_string(), parsed);
        let next: Self = table.try_into().map_err(|e: toml::de::Error| format!("{key} = {value}: {}", e.message()))?;
        next.validate()?;
        *self = next;
        Ok(())
    }

    /// The doc comment of option `key` (dotted for `model.` and `health.`).
    pub fn doc(key: &str) -> Option<&'static str> {
        match key.split_once('.') {
            Some(("model", k)) => ModelConfig::get_field_docs(k).ok(),
            Some(("health", k)) => HealthConfig::get_field_docs(k).ok(),
            Some(_) => None,
            None => Self::get_field_docs(key).ok(),
        }
    }

    /// The config as TOML with each option's doc comment above it.
    pub fn to_commented_toml(&self) -> String {
        let table = toml::Table::try_from(self).unwrap_or_default();
        let mut out = String::from("# ganscope training config: every option with its default.\n\n");
        let mut sections = String::new();
        for (key, value) in &table {
            match value {
                toml::Value::Table(sub) => {
                    sections.push_str(&format!("\n# {}\n[{key}]\n", Self::doc(key).unwrap_or("")));
                    for (k, v) in sub {
                        sections.push_str(&comment_line(Self::doc(&format!("{key}.{k}"))));
                        sections.push_str(&format!("{k} = {v}\n"));
                    }
                }
                _ => {
                    out.push_str(&comment_line(Self::doc(key)));
                    out.push_str(&format!("{key} = {value}\n"));
                }
            }
        }
        out + &sections
    }
}

fn comment_line(doc: Option<&str>) -> String {
    doc.map(|d| format!("# {}\n", d.replace('\n', "\n# "))).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_config_parses_back_to_the_default() {
        let text = TrainConfig::default().to_commented_toml();
        assert!(text.contains("# Tip 14: D steps per G step"));
        assert!(text.contains("[model]"));
        assert_eq!(TrainConfig::from_toml(&text).unwrap(), TrainConfig::default());
    }

    #[test]
    fn set_overrides_nested_keys_and_rejects_bad_ones() {
        let mut c = TrainConfig::default();
        c.set("model.g_width", "48").unwrap();
        c.set("loss", "hinge").unwrap();
        c.set("real_label", "[0.7, 1.2]").unwrap();
        assert_eq!(c.model.g_width, 48);
        assert_eq!(c.loss, LossKind::Hinge);
        assert_eq!(c.real_label, [0.7, 1.2]);
        assert!(c.set("batch_size", "0").is_err());
        assert!(c.set("lr_g", "-1").is_err());
        assert!(c.set("model.resolution", "17").is_err());
        assert!(c.set("no_such_option", "1").is_err());
        assert_eq!(c.batch_size, 64, "a rejected value changes nothing");
    }
}
