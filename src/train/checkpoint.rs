//! Run checkpoints: G, D, the VAE-GAN encoder, EMA, optimizer moments, the replay buffer, the RNG
//! position and the step, in one atomically written safetensors file, so a
//! resumed run continues exactly where it stopped. Beside it, the run's
//! `model.safetensors` is the exported generator that the explorer loads.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::optim::Optimizer;
use super::trainer::{Net, RunState, Trainer};
use crate::gan::model_file::{self, Provenance};
use crate::store::{self, StoreError};

/// The checkpoint's file name in a run directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// The exported generator's file name in a run directory.
pub const MODEL_FILE: &str = "model.safetensors";
const STATE_KEY: &str = "ganscope.run_state";
const OPT_KEY: &str = "ganscope.optimizer_steps";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Trainer {
    /// Each trained network with its optimizer and the checkpoint prefix of
    /// the optimizer's moments.
    fn optimized(&self) -> Vec<(&'static str, &Optimizer, &Net)> {
        let mut out = vec![("opt_g", &self.opt_g, &self.g_net), ("opt_d", &self.opt_d, &self.d_net)];
        if let Some(vae) = &self.vae {
            out.push(("opt_e", &vae.opt, &vae.net));
        }
        out
    }

    fn state_tensors(&self) -> candle_core::Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (_, _, net) in self.optimized() {
            for (name, v, _) in &net.vars {
                out.push((name.clone(), v.as_tensor().clone()));
            }
        }
        if let Some(ema) = &self.ema {
            for ((name, _, _), t) in self.g_net.vars.iter().zip(ema) {
                out.push((format!("ema.{name}"), t.clone()));
            }
        }
        for (prefix, opt, net) in self.optimized() {
            let names =
                net.vars.iter().filter(|(_, _, r)| *r == crate::gan::params::Role::Trainable).map(|(n, _, _)| n);
            let (m, v) = opt.moments();
            for ((name, m), v) in names.zip(m).zip(v) {
                out.push((format!("{prefix}.m.{name}"), m.clone()));
                out.push((format!("{prefix}.v.{name}"), v.clone()));
            }
        }
        let (images, labels) = self.replay.contents();
        if !labels.is_empty() {
            let n = labels.len();
            out.push(("replay.images".into(), Tensor::from_slice(images, (n, images.len() / n), &Device::Cpu)?));
            let l: Vec<f32> = labels.iter().map(|l| *l as f32).collect();
            out.push(("replay.labels".into(), Tensor::from_vec(l, n, &Device::Cpu)?));
        }
        Ok(out)
    }

    /// Writes `checkpoint.safetensors`, `model.safetensors` and `config.toml`
    /// into `dir`, each atomically.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<(), StoreError> {
        let path = dir.join(CHECKPOINT_FILE);
        let content = |reason: String| StoreError::Content { path: path.display().to_string(), reason };
        let tensors = self.state_tensors().map_err(|e| content(e.to_string()))?;
        let state = RunState {
            rng_seed: hex(&self.rng.get_seed()),
            rng_stream: self.rng.get_stream(),
            rng_word_pos: self.rng.get_word_pos().to_string(),
            ..self.state.clone()
        };
        let mut meta = HashMap::new();
        meta.insert(STATE_KEY.into(), serde_json::to_string(&state).map_err(|e| content(e.to_string()))?);
        let steps: Vec<String> = self.optimized().iter().map(|(_, opt, _)| opt.steps().to_string()).collect();
        meta.insert(OPT_KEY.into(), steps.join(","));
        let bytes = store::encode(&tensors, meta, &path)?;
        store::write_atomic(&path, &bytes)?;
        self.export_model(&dir.join(MODEL_FILE))?;
        let toml = toml::to_string(self.config()).map_err(|e| content(e.to_string()))?;
        store::write_atomic(&dir.join("config.toml"), toml.as_bytes())
    }

    /// Writes the sampling generator (EMA when enabled) as a model file.
    pub fn export_model(&self, path: &Path) -> Result<(), StoreError> {
        store::write_atomic(path, &self.model_bytes(path)?)
    }

    /// The sampling generator as model-file bytes; `path` names them in errors.
    pub fn model_bytes(&self, path: &Path) -> Result<Vec<u8>, StoreError> {
        let provenance = Provenance {
            dataset: self.dataset().name.clone(),
            classes: self.dataset().classes.clone(),
            steps: self.step_count(),
            ema: self.config().ema_decay > 0.0,
            ganscope_version: env!("CARGO_PKG_VERSION").into(),
            train_config: toml::to_string(self.config()).unwrap_or_default(),
        };
        model_file::encode(self.model_config(), &provenance, &self.sampling_tensors(), path)
    }

    /// Restores a checkpoint written by [`Self::save_checkpoint`] into this
    /// freshly built trainer (same config and dataset).
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<(), StoreError> {
        self.load_checkpoint_file(&dir.join(CHECKPOINT_FILE))
    }

    /// Restores the checkpoint file at `path` (a run's current checkpoint or
    /// a copy of it, such as the last healthy one).
    pub fn load_checkpoint_file(&mut self, path: &Path) -> Result<(), StoreError> {
        let source = path.display().to_string();
        let content = |reason: String| StoreError::Content { path: source.clone(), reason };
        let bytes = store::read_limited(path)?;
        let head = store::header(&bytes, &source)?;
        let mut expected: Vec<(String, Vec<usize>)> = self
            .state_tensors()
            .map_err(|e| content(e.to_string()))?
            .into_iter()
            .filter(|(n, _)| !n.starts_with("replay."))
            .map(|(n, t)| (n, t.dims().to_vec()))
            .collect();
        for name in ["replay.images", "replay.labels"] {
            if let Some((_, shape)) = head.shapes.get(name) {
                expected.push((name.to_string(), shape.clone()));
            }
        }
        let mut map = store::decode(&bytes, &source, &expected, &self.device().clone())?;
        let mut take = |name: &str| map.remove(name).ok_or_else(|| content(format!("missing tensor `{name}`")));
        let set = |v: &candle_core::Var, t: Tensor| v.set(&t).map_err(|e| content(e.to_string()));
        let vars: Vec<(String, candle_core::Var)> = self
            .optimized()
            .iter()
            .flat_map(|(_, _, net)| net.vars.iter().map(|(n, v, _)| (n.clone(), v.clone())))
            .collect();
        for (name, v) in &vars {
            set(v, take(name)?)?;
        }
        if let Some(ema) = &mut self.ema {
            for ((name, _, _), e) in self.g_net.vars.iter().zip(ema.iter_mut()) {
                *e = take(&format!("ema.{name}"))?;
            }
        }
        let opt_steps: Vec<u64> = head
            .metadata
            .get(OPT_KEY)
            .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
            .unwrap_or_default();
        let mut restored = Vec::new();
        for (prefix, opt, net) in self.optimized() {
            let (mut m, mut v) = (Vec::new(), Vec::new());
            if !opt.moments().0.is_empty() {
                for (n, _, _) in net.vars.iter().filter(|(_, _, r)| *r == crate::gan::params::Role::Trainable) {
                    m.push(take(&format!("{prefix}.m.{n}"))?);
                    v.push(take(&format!("{prefix}.v.{n}"))?);
                }
            }
            restored.push((m, v));
        }
        if opt_steps.len() != restored.len() {
            return Err(content(format!("{} optimizer step counts, expected {}", opt_steps.len(), restored.len())));
        }
        let mut opts = vec![&mut self.opt_g, &mut self.opt_d];
        if let Some(vae) = &mut self.vae {
            opts.push(&mut vae.opt);
        }
        for ((opt, (m, v)), t) in opts.into_iter().zip(restored).zip(opt_steps) {
            opt.restore(t, m, v).map_err(|e| content(e.to_string()))?;
        }
        if let (Some(images), Some(labels)) = (map.remove("replay.images"), map.remove("replay.labels")) {
            let images: Vec<f32> =
                images.flatten_all().and_then(|t| t.to_vec1()).map_err(|e| content(e.to_string()))?;
            let labels: Vec<u32> =
                labels.to_vec1::<f32>().map_err(|e| content(e.to_string()))?.into_iter().map(|l| l as u32).collect();
            self.replay.restore(images, labels).map_err(content)?;
        }
        let state: RunState = head
            .metadata
            .get(STATE_KEY)
            .ok_or_else(|| content("missing run state".into()))
            .and_then(|s| serde_json::from_str(s).map_err(|e| content(e.to_string())))?;
        let seed: Vec<u8> = (0..state.rng_seed.len() / 2)
            .filter_map(|i| u8::from_str_radix(&state.rng_seed[2 * i..2 * i + 2], 16).ok())
            .collect();
        let seed: [u8; 32] = seed.try_into().map_err(|_| content("bad RNG seed".into()))?;
        let word_pos: u128 = state.rng_word_pos.parse().map_err(|_| content("bad RNG position".into()))?;
        self.rng = ChaCha8Rng::from_seed(seed);
        self.rng.set_stream(state.rng_stream);
        self.rng.set_word_pos(word_pos);
        self.state = state;
        Ok(())
    }
}
