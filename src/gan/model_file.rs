//! The model file: one `.safetensors` holding the generator's weights, with
//! the [`ModelConfig`] and training provenance as JSON in its metadata. This
//! is what the explorer and the CLI load, and what `assets/` ships.
//!
//! Loading never trusts the file: the size is capped, the config is
//! validated, and every tensor name, dtype and shape is checked against the
//! architecture the config describes before any weight is copied.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::ModelConfig;
use super::generator::Generator;
use super::params::{LoadedParams, ShapeRecorder};
use crate::store::{self, StoreError};

/// Metadata key holding the model config JSON.
const CONFIG_KEY: &str = "ganscope.model_config";
/// Metadata key holding the provenance JSON.
const PROVENANCE_KEY: &str = "ganscope.provenance";

/// Where a model came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Provenance {
    /// The dataset spec it was trained on (e.g. `builtin:emoji`).
    pub dataset: String,
    /// Class names for conditional models, in label order.
    pub classes: Vec<String>,
    /// Optimizer steps of G.
    pub steps: u64,
    /// Whether the weights are the exponential moving average of G.
    pub ema: bool,
    /// The ganscope version that wrote the file.
    pub ganscope_version: String,
    /// The training config, as TOML, for the record.
    pub train_config: String,
}

/// A generator ready to sample, with its description.
pub struct Model {
    /// The network.
    pub generator: Generator,
    /// Its architecture.
    pub config: ModelConfig,
    /// Where it came from.
    pub provenance: Provenance,
    /// First 16 hex digits of the file's SHA-256: bookmarks name models by it.
    pub hash: String,
    /// Number of parameters.
    pub parameters: usize,
    /// Where the weights live.
    pub device: Device,
}

/// Names and shapes of the generator tensors `cfg` calls for.
pub fn expected_tensors(cfg: &ModelConfig) -> candle_core::Result<Vec<(String, Vec<usize>)>> {
    let mut rec = ShapeRecorder::default();
    Generator::new(cfg, &mut rec)?;
    Ok(rec.shapes)
}

/// Writes a model file atomically.
pub fn save(
    path: &Path,
    cfg: &ModelConfig,
    provenance: &Provenance,
    tensors: &[(String, Tensor)],
) -> Result<(), StoreError> {
    store::write_atomic(path, &encode(cfg, provenance, tensors, path)?)
}

/// A model file's bytes; `path` names them in errors. The training panel
/// hands these to the explorer to sample the live generator.
pub fn encode(
    cfg: &ModelConfig,
    provenance: &Provenance,
    tensors: &[(String, Tensor)],
    path: &Path,
) -> Result<Vec<u8>, StoreError> {
    let content = |reason: String| StoreError::Content { path: path.display().to_string(), reason };
    let mut meta = HashMap::new();
    meta.insert(CONFIG_KEY.to_string(), serde_json::to_string(cfg).map_err(|e| content(e.to_string()))?);
    meta.insert(PROVENANCE_KEY.to_string(), serde_json::to_string(provenance).map_err(|e| content(e.to_string()))?);
    store::encode(tensors, meta, path)
}

/// Loads a model file (or a run directory's `model.safetensors`).
pub fn load(path: &Path, device: &Device) -> Result<Model, StoreError> {
    let file = if path.is_dir() { path.join("model.safetensors") } else { path.to_path_buf() };
    let bytes = store::read_limited(&file)?;
    load_bytes(&bytes, &file.display().to_string(), device)
}

/// Loads a model from bytes; `source` names them in errors.
pub fn load_bytes(bytes: &[u8], source: &str, device: &Device) -> Result<Model, StoreError> {
    let content = |reason: String| StoreError::Content { path: source.to_string(), reason };
    let head = store::header(bytes, source)?;
    let cfg_json = head
        .metadata
        .get(CONFIG_KEY)
        .ok_or_else(|| content(format!("no `{CONFIG_KEY}` metadata: not a ganscope model file")))?;
    let config: ModelConfig = serde_json::from_str(cfg_json).map_err(|e| content(format!("bad model config: {e}")))?;
    config.validate().map_err(|e| content(format!("bad model config: {e}")))?;
    let provenance: Provenance = match head.metadata.get(PROVENANCE_KEY) {
        Some(p) => serde_json::from_str(p).map_err(|e| content(format!("bad provenance: {e}")))?,
        None => Provenance::default(),
    };
    let expected = expected_tensors(&config).map_err(|e| content(e.to_string()))?;
    let tensors = store::decode(bytes, source, &expected, device)?;
    let parameters = tensors.values().map(|t| t.elem_count()).sum();
    let mut params = LoadedParams::new(tensors, device);
    let generator = Generator::new(&config, &mut params).map_err(|e| content(e.to_string()))?;
    let hash = Sha256::digest(bytes).iter().take(8).map(|b| format!("{b:02x}")).collect();
    Ok(Model { generator, config, provenance, hash, parameters, device: device.clone() })
}

/// Images generated per forward pass when sampling many.
const SAMPLE_CHUNK: usize = 64;

impl Model {
    /// Images for `latents` (rows of `z_dim` floats), as NCHW floats in
    /// [-1, 1]. `class` picks the class of a conditional model (default 0);
    /// `dropout` keeps G's dropout on at sampling time (tip 17).
    pub fn generate(
        &self,
        latents: &[f32],
        class: Option<u32>,
        dropout: Option<&mut rand_chacha::ChaCha8Rng>,
    ) -> candle_core::Result<Vec<f32>> {
        let dim = self.config.z_dim;
        if dim == 0 || !latents.len().is_multiple_of(dim) {
            candle_core::bail!("latents of length {} are not rows of {dim}", latents.len());
        }
        let device = self.device.clone();
        let mut pass = super::Pass { train: false, dropout: dropout.is_some(), rng: dropout };
        let mut out = Vec::with_capacity(latents.len() / dim * self.image_len());
        for chunk in latents.chunks(SAMPLE_CHUNK * dim) {
            let n = chunk.len() / dim;
            let z = Tensor::from_slice(chunk, (n, dim), &device)?;
            let labels = if self.config.conditional() {
                Some(Tensor::from_vec(vec![class.unwrap_or(0); n], n, &device)?)
            } else {
                None
            };
            let img = self.generator.forward(&z, labels.as_ref(), &mut pass)?;
            out.extend(img.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// Floats per image.
    pub fn image_len(&self) -> usize {
        self.config.channels * self.config.resolution * self.config.resolution
    }
}
