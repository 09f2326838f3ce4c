//! Training: the config, the step, the tricks, the health monitor,
//! checkpoints and the session that keeps a run directory current.

pub mod checkpoint;
pub mod config;
pub mod health;
pub mod history;
pub mod labels;
pub mod losses;
pub mod optim;
pub mod replay;
pub mod run;
pub mod trainer;

pub use config::TrainConfig;
pub use run::Session;
pub use trainer::Trainer;
