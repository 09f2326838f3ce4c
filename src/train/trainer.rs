//! The training step: D on an all-real and an all-fake batch, then G, with
//! every trick of the config applied. One `Trainer` serves the CLI and the
//! app's training panel alike.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::Rng;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::config::{LossKind, OptimizerKind, TrainConfig};
use super::health::{Alarm, HealthMonitor, Observation, diversity};
use super::labels::targets;
use super::losses;
use super::optim::{Optimizer, grad_norm};
use super::replay::ReplayBuffer;
use crate::data::Dataset;
use crate::gan::discriminator::Verdict;
use crate::gan::params::{FreshParams, LoadedParams, Role, randn, uniform};
use crate::gan::{Discriminator, Encoder, Generator, ModelConfig, Pass};
use crate::latent;
use crate::ops::RecentTransforms;
use crate::ops::conv_bn::twice_differentiable;

/// Images compared by the diversity measure (pairwise, so kept small).
const DIVERSITY_SAMPLE: usize = 16;

/// What one G step (and its D steps) measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    /// The step just completed (1-based).
    pub step: u64,
    /// D's loss (last D step).
    pub d_loss: f32,
    /// G's loss.
    pub g_loss: f32,
    /// Mean D(x) on the real batch.
    pub d_real: f32,
    /// Mean D(G(z)) on the fake batch.
    pub d_fake: f32,
    /// Global gradient norm of G.
    pub g_grad_norm: f32,
    /// Global gradient norm of D.
    pub d_grad_norm: f32,
    /// Std of the instance noise used.
    pub instance_noise: f32,
    /// AC-GAN classification accuracy of D on real images, for conditional models.
    pub class_accuracy: Option<f32>,
    /// Fake/real diversity ratio, measured every `log_every` steps.
    pub diversity: Option<f32>,
    /// Target flips applied to D this step.
    pub flips: usize,
    /// Replayed fakes in D's fake batch this step.
    pub replayed: usize,
    /// VAE-GAN reconstruction loss (tip 7), when the hybrid is on.
    #[serde(default)]
    pub recon_loss: Option<f32>,
    /// VAE-GAN KL term (tip 7), when the hybrid is on.
    #[serde(default)]
    pub kl: Option<f32>,
    /// Alarms newly raised this step.
    pub alarms: Vec<Alarm>,
}

/// The persistent position of a run, saved in checkpoints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunState {
    /// G steps completed.
    pub step: u64,
    /// Real batches drawn so far (D steps).
    pub batches_drawn: u64,
    /// RNG seed (hex) and position, so randomness continues exactly.
    pub rng_seed: String,
    /// ChaCha stream.
    pub rng_stream: u64,
    /// ChaCha word position (decimal string: it is a u128).
    pub rng_word_pos: String,
}

/// A named set of variables, in creation order.
pub(crate) struct Net {
    pub(crate) vars: Vec<(String, Var, Role)>,
}

impl Net {
    fn trainable(&self) -> Vec<Var> {
        self.vars.iter().filter(|(_, _, r)| *r == Role::Trainable).map(|(_, v, _)| v.clone()).collect()
    }

    /// Detached tensors sharing the variables' storage: a frozen view that
    /// sees every update but records no graph.
    fn detached(&self) -> BTreeMap<String, Tensor> {
        self.vars.iter().map(|(n, v, _)| (n.clone(), v.as_tensor().detach())).collect()
    }
}

/// Tip 7's hybrid: the encoder, its variables and its optimizer.
pub(crate) struct Vae {
    enc: Encoder,
    pub(crate) net: Net,
    pub(crate) opt: Optimizer,
}

/// A GAN in training.
pub struct Trainer {
    cfg: TrainConfig,
    model: ModelConfig,
    data: Arc<Dataset>,
    device: Device,
    g: Generator,
    g_frozen: Generator,
    d: Discriminator,
    d_frozen: Discriminator,
    pub(crate) g_net: Net,
    pub(crate) d_net: Net,
    pub(crate) ema: Option<Vec<Tensor>>,
    pub(crate) opt_g: Optimizer,
    pub(crate) opt_d: Optimizer,
    pub(crate) vae: Option<Vae>,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) state: RunState,
    pub(crate) replay: ReplayBuffer,
    health: HealthMonitor,
    perm: (u64, Vec<usize>),
    real_buf: Vec<f32>,
    label_buf: Vec<u32>,
    /// The last real batch D saw and its labels, kept for the VAE-GAN terms.
    last_real: Option<(Tensor, Option<Tensor>)>,
    /// Kernel transforms kept from call to call while weights are unchanged.
    transforms: Arc<RecentTransforms>,
    /// Whether steps keep the pool's other threads spinning for their ops
    /// ([`Trainer::keep_pool_awake`]).
    awake: bool,
}

impl Trainer {
    /// A fresh run of `cfg` on `data`. The model's resolution and channels
    /// must match the dataset's; conditional models need labels.
    pub fn new(cfg: TrainConfig, data: Arc<Dataset>, device: &Device) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::Msg)?;
        let mut model = cfg.model.clone();
        if data.resolution != model.resolution || data.channels != model.channels {
            candle_core::bail!(
                "dataset {} is {}x{} with {} channels, the model expects {}x{} with {}",
                data.name,
                data.resolution,
                data.resolution,
                data.channels,
                model.resolution,
                model.resolution,
                model.channels
            );
        }
        if data.is_empty() {
            candle_core::bail!("dataset {} is empty", data.name);
        }
        model.num_classes = if cfg.conditional {
            if data.classes.len() < 2 {
                candle_core::bail!(
                    "conditional training needs a dataset with at least 2 classes; {} has {}",
                    data.name,
                    data.classes.len()
                );
            }
            data.classes.len()
        } else {
            0
        };
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let (g, g_net) = {
            let mut p = FreshParams::new(&mut rng, device);
            let g = Generator::new(&model, &mut p)?;
            (g, Net { vars: p.vars })
        };
        let (d, d_net) = {
            let mut p = FreshParams::new(&mut rng, device);
            let d = Discriminator::new(&model, &mut p)?;
            (d, Net { vars: p.vars })
        };
        let g_frozen = Generator::new(&model, &mut LoadedParams::views(g_net.detached(), device))?;
        let d_frozen = Discriminator::new(&model, &mut LoadedParams::views(d_net.detached(), device))?;
        let opt_g = Optimizer::new(OptimizerKind::Adam, g_net.trainable(), cfg.lr_g, cfg.beta1, cfg.beta2)?;
        let opt_d = Optimizer::new(cfg.d_optimizer, d_net.trainable(), cfg.lr_d, cfg.beta1, cfg.beta2)?;
        let vae = if cfg.vae_gan {
            let mut p = FreshParams::new(&mut rng, device);
            let enc = Encoder::new(&model, &mut p)?;
            let net = Net { vars: p.vars };
            let opt = Optimizer::new(OptimizerKind::Adam, net.trainable(), cfg.lr_g, cfg.beta1, cfg.beta2)?;
            Some(Vae { enc, net, opt })
        } else {
            None
        };
        let ema = if cfg.ema_decay > 0.0 {
            Some(g_net.vars.iter().map(|(_, v, _)| v.as_tensor().detach().copy()).collect::<Result<Vec<_>>>()?)
        } else {
            None
        };
        let image_len = model.channels * model.resolution * model.resolution;
        let state =
            RunState { step: 0, batches_drawn: 0, rng_seed: String::new(), rng_stream: 0, rng_word_pos: String::new() };
        Ok(Self {
            replay: ReplayBuffer::new(cfg.replay_size, image_len),
            health: HealthMonitor::new(cfg.health.clone()),
            cfg,
            model,
            data,
            device: device.clone(),
            g,
            g_frozen,
            d,
            d_frozen,
            g_net,
            d_net,
            ema,
            opt_g,
            opt_d,
            vae,
            rng,
            state,
            perm: (u64::MAX, Vec::new()),
            real_buf: Vec::new(),
            label_buf: Vec::new(),
            last_real: None,
            transforms: Arc::default(),
            awake: false,
        })
    }

    /// Runs each step with the CPU pool's other threads spinning between
    /// its ops ([`crate::ops::on_cpu_pool_awake`]), for a process that
    /// trains and does nothing else: the headless `train` and `bench`.
    ///
    /// Why: between two ops of a step an idle worker goes to sleep, and
    /// waking it for the next op (a futex, and latency) came to ~4% of a
    /// two-thread 32 px step's samples (`perf`). Spinning, with candle's
    /// elementwise ops on the step's thread ([`crate::device`]), two-thread
    /// 32 px steps ran 3-7% faster (three alternating rounds: transposed
    /// conv 540-552 against 506-528 images/s, pixel shuffle 450-466 against
    /// 439-448, nearest-conv 528-535 against 506-510; BENCHMARKS.md); 64
    /// px was level. Not in the app, whose renderer needs the cores a
    /// spinner would hold.
    pub fn keep_pool_awake(&mut self, awake: bool) {
        self.awake = awake;
    }

    /// The training config.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// The architecture actually trained (with `num_classes` filled in).
    pub fn model_config(&self) -> &ModelConfig {
        &self.model
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.data
    }

    /// G steps completed.
    pub fn step_count(&self) -> u64 {
        self.state.step
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The alarms raised now.
    pub fn alarms(&self) -> &[Alarm] {
        self.health.active()
    }

    /// Changes a steerable option mid-run (labels, noise, replay, D steps,
    /// learning rates, ...); architecture options are refused.
    pub fn set_option(&mut self, key: &str, value: &str) -> std::result::Result<(), String> {
        if !TrainConfig::steerable(key) {
            return Err(format!("`{key}` cannot change during a run"));
        }
        let mut next = self.cfg.clone();
        next.set(key, value)?;
        self.opt_g.lr = next.lr_g;
        self.opt_d.lr = next.lr_d;
        if let Some(vae) = &mut self.vae {
            vae.opt.lr = next.lr_g;
        }
        self.cfg = next;
        self.reset_health();
        Ok(())
    }

    /// Clears the health monitor's windows and alarms: after a setting
    /// changes or the run rolls back, old measurements no longer apply.
    pub fn reset_health(&mut self) {
        self.health = HealthMonitor::new(self.cfg.health.clone());
    }

    /// Instance-noise std at `step`: linear decay to zero (tip 13).
    pub fn noise_at(&self, step: u64) -> f32 {
        let span = self.cfg.instance_noise_steps.max(1) as f64;
        (self.cfg.instance_noise * (1.0 - step as f64 / span).max(0.0)) as f32
    }

    /// The indices of the next real batch: a stream of per-epoch
    /// permutations that depends only on the seed and the batch count, so a
    /// resumed run draws the same batches.
    fn next_batch(&mut self) -> Vec<usize> {
        let n = self.data.len() as u64;
        let b = self.cfg.batch_size as u64;
        let start = self.state.batches_drawn * b;
        self.state.batches_drawn += 1;
        (start..start + b)
            .map(|p| {
                let epoch = p / n;
                if self.perm.0 != epoch {
                    let mut perm: Vec<usize> = (0..n as usize).collect();
                    perm.shuffle(&mut ChaCha8Rng::seed_from_u64(
                        self.cfg.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    ));
                    self.perm = (epoch, perm);
                }
                self.perm.1[(p % n) as usize]
            })
            .collect()
    }

    /// Latents for a batch, drawn from the prior (tip 3), and random class labels.
    fn latents(&mut self, n: usize) -> Result<(Tensor, Option<Tensor>)> {
        let dim = self.model.z_dim;
        let seeds: Vec<u64> = (0..n).map(|_| self.rng.random()).collect();
        let z: Vec<f32> = seeds.iter().flat_map(|s| latent::from_seed(*s, dim, self.cfg.prior)).collect();
        let z = Tensor::from_vec(z, (n, dim), &self.device)?;
        let labels = if self.model.conditional() {
            let k = self.model.num_classes as u32;
            let l: Vec<u32> = (0..n).map(|_| self.rng.random_range(0..k)).collect();
            Some(Tensor::from_vec(l, n, &self.device)?)
        } else {
            None
        };
        Ok((z, labels))
    }

    fn with_noise(&mut self, x: &Tensor, std: f32) -> Result<Tensor> {
        if std > 0.0 { x + randn(&mut self.rng, x.dims(), std, &self.device)? } else { Ok(x.clone()) }
    }

    /// One G step, preceded by `d_steps_per_g` D steps, on a rayon worker
    /// when training on the CPU ([`crate::ops::on_cpu_pool`]), the other
    /// workers spinning for its ops where [`Trainer::keep_pool_awake`] asks.
    pub fn step(&mut self) -> Result<StepStats> {
        let (device, awake) = (self.device.clone(), self.awake);
        let transforms = Arc::clone(&self.transforms);
        let step = || RecentTransforms::keeping(&transforms, || self.step_here());
        if awake { crate::ops::on_cpu_pool_awake(&device, step) } else { crate::ops::on_cpu_pool(&device, step) }
    }

    fn step_here(&mut self) -> Result<StepStats> {
        let sigma = self.noise_at(self.state.step);
        let mut stats = StepStats { instance_noise: sigma, ..Default::default() };
        let measure = (self.state.step + 1).is_multiple_of(self.cfg.log_every);
        for _ in 0..self.cfg.d_steps_per_g {
            self.d_step(sigma, measure, &mut stats)?;
        }
        self.g_step(sigma, &mut stats)?;
        self.state.step += 1;
        stats.step = self.state.step;
        stats.alarms = self.health.observe(Observation {
            step: stats.step,
            d_loss: stats.d_loss,
            g_loss: stats.g_loss,
            d_real: stats.d_real,
            d_fake: stats.d_fake,
            g_grad: stats.g_grad_norm,
            d_grad: stats.d_grad_norm,
            diversity: stats.diversity,
        });
        Ok(stats)
    }

    fn d_step(&mut self, sigma: f32, measure: bool, stats: &mut StepStats) -> Result<()> {
        let b = self.cfg.batch_size;
        let (c, r) = (self.model.channels, self.model.resolution);
        let idx = self.next_batch();
        self.data.gather(&idx, &mut self.real_buf, &mut self.label_buf);
        let real = Tensor::from_slice(&self.real_buf, (b, c, r, r), &self.device)?;
        let real_labels =
            if self.model.conditional() { Some(Tensor::from_slice(&self.label_buf, b, &self.device)?) } else { None };
        if self.vae.is_some() {
            self.last_real = Some((real.clone(), real_labels.clone()));
        }
        let (z, mut fake_labels) = self.latents(b)?;
        let mut pass = Pass { train: true, dropout: true, rng: Some(&mut self.rng) };
        let mut fake = self.g_frozen.forward(&z, fake_labels.as_ref(), &mut pass)?;
        if measure {
            let len = c * r * r;
            let m = DIVERSITY_SAMPLE.min(b);
            let fake_div = diversity(&fake.narrow(0, 0, m)?.flatten_all()?.to_vec1()?, len);
            let real_div = diversity(&self.real_buf[..m * len], len);
            stats.diversity = Some(if real_div > 0.0 { fake_div / real_div } else { 1.0 });
        }
        let k = (self.cfg.replay_fraction * b as f64).round() as usize;
        if self.cfg.replay_size > 0 {
            let mut pixels: Vec<f32> = fake.flatten_all()?.to_vec1()?;
            let mut labels: Vec<u32> = match &fake_labels {
                Some(l) => l.to_vec1()?,
                None => vec![0; b],
            };
            let fresh = (pixels.clone(), labels.clone());
            stats.replayed = self.replay.mix_into(&mut self.rng, k, &mut pixels, &mut labels);
            self.replay.push(&mut self.rng, &fresh.0, &fresh.1);
            fake = Tensor::from_vec(pixels, (b, c, r, r), &self.device)?;
            if fake_labels.is_some() {
                fake_labels = Some(Tensor::from_vec(labels, b, &self.device)?);
            }
        }
        let real_in = self.with_noise(&real, sigma)?;
        let fake_in = self.with_noise(&fake, sigma)?;
        let (vr, vf) = self.judge(&real_in, real_labels.as_ref(), &fake_in, fake_labels.as_ref())?;
        let (tr, f1) = targets(&mut self.rng, b, self.cfg.real_label, self.cfg.fake_label, self.cfg.label_flip);
        let (tf, f2) = targets(&mut self.rng, b, self.cfg.fake_label, self.cfg.real_label, self.cfg.label_flip);
        stats.flips = f1 + f2;
        let tr = Tensor::from_vec(tr, b, &self.device)?;
        let tf = Tensor::from_vec(tf, b, &self.device)?;
        let kind = self.cfg.loss;
        let mut loss = (losses::d_real(kind, &vr.logits, &tr)? + losses::d_fake(kind, &vf.logits, &tf)?)?;
        if let (Some(cr), Some(cf), Some(lr), Some(lf)) =
            (&vr.class_logits, &vf.class_logits, &real_labels, &fake_labels)
        {
            let aux = (losses::cross_entropy(cr, lr)? + losses::cross_entropy(cf, lf)?)?;
            loss = (loss + (aux * self.cfg.aux_weight)?)?;
            let hit = cr.argmax(1)?.eq(lr)?.to_dtype(DType::F32)?.mean_all()?.to_scalar::<f32>()?;
            stats.class_accuracy = Some(hit);
        }
        if kind == LossKind::Wasserstein && self.cfg.gp_weight > 0.0 {
            let gp = self.gradient_penalty(&real, &fake, real_labels.as_ref())?;
            loss = (loss + (gp * self.cfg.gp_weight)?)?;
        }
        let grads = loss.backward()?;
        stats.d_grad_norm = grad_norm(&grads, &self.opt_d_vars())?;
        self.opt_d.step(&grads)?;
        stats.d_loss = loss.to_scalar::<f32>()?;
        stats.d_real = losses::mean_prob(&vr.logits)?;
        stats.d_fake = losses::mean_prob(&vf.logits)?;
        Ok(())
    }

    /// D's verdicts on a real and a fake batch, in training mode. Tip 4:
    /// two separate forward passes, never one mixed batch, so BatchNorm
    /// statistics of the reals never depend on the fakes.
    pub fn judge(
        &self,
        real: &Tensor,
        real_labels: Option<&Tensor>,
        fake: &Tensor,
        fake_labels: Option<&Tensor>,
    ) -> Result<(Verdict, Verdict)> {
        Ok((self.d.forward(real, real_labels, true)?, self.d.forward(fake, fake_labels, true)?))
    }

    fn opt_d_vars(&self) -> Vec<Var> {
        self.d_net.trainable()
    }

    /// WGAN-GP: (|grad_x D(x_hat)| - 1)^2 at random points between real and
    /// fake. Differentiating the gradient needs candle's double backprop.
    fn gradient_penalty(&mut self, real: &Tensor, fake: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let b = real.dim(0)?;
        let eps = uniform(&mut self.rng, &[b, 1, 1, 1], 0.0, 1.0, &self.device)?;
        let mix = (real.broadcast_mul(&eps)? + fake.detach().broadcast_mul(&(1.0 - eps)?)?)?;
        let x = Var::from_tensor(&mix)?;
        // Layers as separate ops: this graph's gradient is differentiated again.
        let d = &self.d;
        let out = twice_differentiable(|| d.forward(x.as_tensor(), labels, true))?.logits.sum_all()?;
        let grads = out.backward()?;
        let gx = grads
            .get(x.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg("no input gradient for the gradient penalty".into()))?;
        let norms = (gx.sqr()?.flatten_from(1)?.sum(1)? + 1e-12)?.sqrt()?;
        (norms - 1.0)?.sqr()?.mean_all()
    }

    fn g_step(&mut self, sigma: f32, stats: &mut StepStats) -> Result<()> {
        let b = self.cfg.batch_size;
        let (z, labels) = self.latents(b)?;
        let mut pass = Pass { train: true, dropout: true, rng: Some(&mut self.rng) };
        let fake = self.g.forward(&z, labels.as_ref(), &mut pass)?;
        let fake_in = self.with_noise(&fake, sigma)?;
        // D's weights are frozen here: no gradient is computed for them.
        let v = self.d_frozen.forward(&fake_in, labels.as_ref(), true)?;
        let mut loss = losses::g_loss(self.cfg.loss, &v.logits)?;
        if let (Some(c), Some(l)) = (&v.class_logits, &labels) {
            loss = (loss + (losses::cross_entropy(c, l)? * self.cfg.aux_weight)?)?;
        }
        let vae_terms = self.vae_terms()?;
        if let Some((rec, kl)) = &vae_terms {
            loss = ((loss + (rec * self.cfg.recon_weight)?)? + (kl * self.cfg.kl_weight)?)?;
        }
        let grads = loss.backward()?;
        stats.g_grad_norm = grad_norm(&grads, &self.g_net.trainable())?;
        self.opt_g.step(&grads)?;
        if let Some(vae) = &mut self.vae {
            vae.opt.step(&grads)?;
        }
        if let Some((rec, kl)) = vae_terms {
            stats.recon_loss = Some(rec.to_scalar::<f32>()?);
            stats.kl = Some(kl.to_scalar::<f32>()?);
        }
        stats.g_loss = loss.to_scalar::<f32>()?;
        self.update_ema()?;
        Ok(())
    }

    /// Tip 7's VAE-GAN terms on the last real batch D saw: G's
    /// reconstruction error through the encoder's sampled z, and the KL
    /// divergence of q(z | x) from N(0, I). None when the hybrid is off.
    fn vae_terms(&mut self) -> Result<Option<(Tensor, Tensor)>> {
        let Some(vae) = &self.vae else { return Ok(None) };
        let Some((real, labels)) = &self.last_real else { candle_core::bail!("the VAE-GAN terms need a D step first") };
        let (mu, logvar) = vae.enc.forward(real, true)?;
        let eps = randn(&mut self.rng, mu.dims(), 1.0, &self.device)?;
        let z = (&mu + ((&logvar * 0.5)?.exp()? * eps)?)?;
        let mut pass = Pass { train: true, dropout: true, rng: Some(&mut self.rng) };
        let recon = self.g.forward(&z, labels.as_ref(), &mut pass)?;
        let rec = (recon - real)?.sqr()?.mean_all()?;
        let kl = (((mu.sqr()? + logvar.exp()?)? - &logvar)? - 1.0)?.mean_all()?.affine(0.5, 0.0)?;
        Ok(Some((rec, kl)))
    }

    /// EMA of G's weights; buffers (running statistics) are copied. Every
    /// input is detached: a tensor computed from a `Var` keeps its whole
    /// history alive, and the EMA would otherwise chain every step's graph.
    fn update_ema(&mut self) -> Result<()> {
        // Warm-up: early on the average follows G closely, so short runs and
        // the first grids are not dominated by the random initial weights.
        let t = self.state.step as f64;
        let decay = self.cfg.ema_decay.min((1.0 + t) / (10.0 + t));
        if let Some(ema) = &mut self.ema {
            for (e, (_, v, role)) in ema.iter_mut().zip(&self.g_net.vars) {
                *e = match role {
                    Role::Trainable => ((&*e * decay)? + (v.as_tensor().detach() * (1.0 - decay))?)?,
                    Role::Buffer => v.as_tensor().detach().copy()?,
                };
            }
        }
        Ok(())
    }

    /// The generator weights to sample and export: EMA when enabled.
    pub fn sampling_tensors(&self) -> Vec<(String, Tensor)> {
        match &self.ema {
            Some(ema) => self.g_net.vars.iter().zip(ema).map(|((n, _, _), t)| (n.clone(), t.clone())).collect(),
            None => self.g_net.vars.iter().map(|(n, v, _)| (n.clone(), v.as_tensor().detach())).collect(),
        }
    }

    /// A generator for sampling that shares nothing with training.
    pub fn sampling_generator(&self) -> Result<Generator> {
        let map =
            self.sampling_tensors().into_iter().map(|(n, t)| Ok((n, t.detach().copy()?))).collect::<Result<_>>()?;
        Generator::new(&self.model, &mut LoadedParams::new(map, &self.device))
    }

    /// Images (N, C, R, R) of the fixed evaluation noise: the latents of
    /// seeds 0..grid_size, classes cycling, so grids stay comparable over a
    /// run and match `ganscope sample --seed 0`.
    pub fn sample_fixed(&self) -> Result<Tensor> {
        let g = self.sampling_generator()?;
        let n = self.cfg.grid_size;
        let dim = self.model.z_dim;
        let z: Vec<f32> = (0..n as u64).flat_map(|s| latent::from_seed(s, dim, self.cfg.prior)).collect();
        let z = Tensor::from_vec(z, (n, dim), &self.device)?;
        let labels = if self.model.conditional() {
            let l: Vec<u32> = (0..n).map(|i| (i % self.model.num_classes) as u32).collect();
            Some(Tensor::from_vec(l, n, &self.device)?)
        } else {
            None
        };
        g.forward(&z, labels.as_ref(), &mut Pass::eval())
    }
}
