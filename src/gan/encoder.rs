//! The VAE-GAN encoder (tip 7's hybrid): D's convolutional body, then a
//! linear layer to the mean and log-variance of q(z | x).

use candle_core::{Result, Tensor};

use super::blocks::Linear;
use super::config::ModelConfig;
use super::discriminator::DownStack;
use super::params::{Params, Scope};

/// Images to posterior parameters.
pub struct Encoder {
    body: DownStack,
    head: Linear,
    z_dim: usize,
}

impl Encoder {
    /// Builds E for `cfg`, taking its weights from `params` under prefix `e`.
    pub fn new(cfg: &ModelConfig, params: &mut dyn Params) -> Result<Self> {
        let mut s = Scope::new(params, "e");
        let body = DownStack::new(&mut s, cfg, cfg.channels, false)?;
        let base = cfg.base_size();
        let head = Linear::new(&mut s.pp("head"), body.channels * base * base, 2 * cfg.z_dim, false)?;
        Ok(Self { body, head, z_dim: cfg.z_dim })
    }

    /// (mean, log-variance), each (N, z_dim), for images `x` (N, C, R, R).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let h = self.body.forward(x, train)?.flatten_from(1)?;
        let out = self.head.forward(&h, train)?;
        Ok((out.narrow(1, 0, self.z_dim)?, out.narrow(1, self.z_dim, self.z_dim)?))
    }
}
