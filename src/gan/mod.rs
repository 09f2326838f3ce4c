//! The DCGAN itself: architecture config, layers, G, D, the VAE-GAN
//! encoder, and the model file.

pub mod blocks;
pub mod config;
pub mod discriminator;
pub mod encoder;
pub mod generator;
pub mod model_file;
pub mod params;

pub use blocks::Pass;
pub use config::ModelConfig;
pub use discriminator::Discriminator;
pub use encoder::Encoder;
pub use generator::Generator;
pub use model_file::{Model, Provenance};
