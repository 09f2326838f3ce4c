//! ganscope: train DCGANs with candle and explore their latent space live.
//!
//! Dependencies point one way: `app` -> `worker`/`cli` -> `train`/`export`
//! -> `gan`/`data`/`latent` -> `ops`. Only `app` and `render` know egui/wgpu;
//! they never touch candle.

#[cfg(feature = "gui")]
pub mod app;
pub mod assets;
pub mod background;
pub mod bench;
pub mod cli;
pub mod data;
pub mod device;
pub mod export;
pub mod gan;
pub mod latent;
pub mod ops;
#[cfg(feature = "gui")]
pub mod render;
pub mod store;
pub mod train;
pub mod train_worker;
pub mod worker;
