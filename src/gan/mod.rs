//! The DCGAN itself: architecture config, layers, G and D, and the model file.

pub mod blocks;
pub mod config;
pub mod discriminator;
pub mod generator;
pub mod model_file;
pub mod params;

pub use blocks::Pass;
pub use config::ModelConfig;
pub use discriminator::Discriminator;
pub use generator::Generator;
pub use model_file::{Model, Provenance};
