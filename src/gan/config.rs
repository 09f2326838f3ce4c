//! `ModelConfig`: the architecture of a generator/discriminator pair. It
//! travels inside every model file and checkpoint, so a file describes itself.

use documented::DocumentedFields;
use serde::{Deserialize, Serialize};

/// Normalization layer choice, per network (GANHACKS tip 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    /// BatchNorm; D then sees all-real and all-fake batches separately.
    Batch,
    /// Per-sample, per-channel normalization (no batch statistics).
    Instance,
    /// PixelNorm: each pixel's feature vector scaled to unit RMS.
    Pixel,
    /// No normalization.
    None,
}

/// How G doubles its resolution (tip 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Upsample {
    /// 4x4 stride-2 transposed convolution (classic DCGAN).
    ConvTranspose,
    /// 3x3 convolution to 4x the channels, then pixel shuffle.
    PixelShuffle,
    /// Nearest-neighbour upsampling, then a 3x3 convolution (no checkerboard).
    NearestConv,
}

/// How D halves its resolution (tip 5; never max-pooling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Downsample {
    /// 4x4 stride-2 convolution (classic DCGAN).
    StridedConv,
    /// 3x3 convolution, then 2x2 average pooling.
    AvgPool,
}

/// The architecture of both networks. Every field has a default; see
/// `ganscope train --print-config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DocumentedFields)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Image side in pixels: 28 (starts at 7x7), 32 or 64 (start at 4x4).
    pub resolution: usize,
    /// Image channels: 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Latent dimension.
    pub z_dim: usize,
    /// G's channel width at full resolution; doubles at each coarser level.
    pub g_width: usize,
    /// D's channel width at full resolution; doubles at each coarser level.
    pub d_width: usize,
    /// G's normalization (tip 4).
    pub g_norm: NormKind,
    /// D's normalization (tip 4); never on D's first layer.
    pub d_norm: NormKind,
    /// G's upsampling (tip 5).
    pub upsample: Upsample,
    /// D's downsampling (tip 5).
    pub downsample: Downsample,
    /// LeakyReLU slope in D (tip 5).
    pub d_leaky_slope: f64,
    /// LeakyReLU slope in G's hidden layers; 0 is plain ReLU (tip 5).
    pub g_leaky_slope: f64,
    /// Dropout probability in G's first `g_dropout_layers` blocks (tip 17).
    pub g_dropout: f64,
    /// How many of G's blocks (from the coarsest) apply dropout.
    pub g_dropout_layers: usize,
    /// Std of Gaussian noise added after every G block while training (tip 13).
    pub g_layer_noise: f64,
    /// Minibatch-stddev feature before D's last layer (tip 15).
    pub minibatch_stddev: bool,
    /// Spectral normalization of D's weights.
    pub spectral_norm: bool,
    /// Number of classes for conditional training; 0 is unconditional (tips 12, 16).
    pub num_classes: usize,
    /// Size of G's class embedding, concatenated to z (tip 16).
    pub class_embed_dim: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            resolution: 32,
            channels: 3,
            z_dim: 64,
            g_width: 32,
            d_width: 32,
            g_norm: NormKind::Batch,
            d_norm: NormKind::Batch,
            upsample: Upsample::ConvTranspose,
            downsample: Downsample::StridedConv,
            d_leaky_slope: 0.2,
            g_leaky_slope: 0.0,
            g_dropout: 0.0,
            g_dropout_layers: 1,
            g_layer_noise: 0.0,
            minibatch_stddev: false,
            spectral_norm: false,
            num_classes: 0,
            class_embed_dim: 16,
        }
    }
}

/// Upper bounds that keep a config from a file from asking for absurd memory.
const MAX_WIDTH: usize = 1024;
const MAX_Z: usize = 4096;
const MAX_CLASSES: usize = 10_000;

impl ModelConfig {
    /// Side of G's first feature map and D's last one.
    pub fn base_size(&self) -> usize {
        if self.resolution == 28 { 7 } else { 4 }
    }

    /// Number of 2x resolution steps between `base_size` and `resolution`.
    pub fn levels(&self) -> usize {
        (self.resolution / self.base_size()).trailing_zeros() as usize
    }

    /// Whether G and D are class-conditional (AC-GAN).
    pub fn conditional(&self) -> bool {
        self.num_classes > 0
    }

    /// Checks every field; the message names the field and the allowed values.
    pub fn validate(&self) -> Result<(), String> {
        if ![28, 32, 64].contains(&self.resolution) {
            return Err(format!("resolution {} is not supported (28, 32 or 64)", self.resolution));
        }
        if ![1, 3].contains(&self.channels) {
            return Err(format!("channels {} must be 1 (grey) or 3 (RGB)", self.channels));
        }
        let bounded = [
            ("z_dim", self.z_dim, MAX_Z),
            ("g_width", self.g_width, MAX_WIDTH),
            ("d_width", self.d_width, MAX_WIDTH),
            ("class_embed_dim", self.class_embed_dim, MAX_Z),
        ];
        for (name, v, max) in bounded {
            if v == 0 || v > max {
                return Err(format!("{name} = {v} is out of range 1..={max}"));
            }
        }
        if self.num_classes > MAX_CLASSES {
            return Err(format!("num_classes = {} is over {MAX_CLASSES}", self.num_classes));
        }
        for (name, v) in [("d_leaky_slope", self.d_leaky_slope), ("g_leaky_slope", self.g_leaky_slope)] {
            if !(0.0..1.0).contains(&v) {
                return Err(format!("{name} = {v} must be in [0, 1)"));
            }
        }
        if !(0.0..1.0).contains(&self.g_dropout) {
            return Err(format!("g_dropout = {} must be in [0, 1)", self.g_dropout));
        }
        if !(0.0..=10.0).contains(&self.g_layer_noise) {
            return Err(format!("g_layer_noise = {} must be in [0, 10]", self.g_layer_noise));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_match_resolutions() {
        for (res, levels) in [(28, 2), (32, 3), (64, 4)] {
            let c = ModelConfig { resolution: res, ..Default::default() };
            assert_eq!(c.levels(), levels);
            assert_eq!(c.base_size() << c.levels(), res);
        }
    }

    #[test]
    fn absurd_values_are_rejected() {
        for bad in [
            ModelConfig { resolution: 17, ..Default::default() },
            ModelConfig { channels: 2, ..Default::default() },
            ModelConfig { g_width: 0, ..Default::default() },
            ModelConfig { z_dim: 1 << 20, ..Default::default() },
            ModelConfig { g_dropout: 1.0, ..Default::default() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(ModelConfig::default().validate().is_ok());
    }
}
