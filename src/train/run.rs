//! A training session on a run directory: steps the [`Trainer`] and keeps the
//! directory current (metrics.jsonl, sample grids, checkpoints). The CLI and
//! the app's worker both drive training through [`Session::advance`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use serde_json::json;

use super::checkpoint::CHECKPOINT_FILE;
use super::config::TrainConfig;
use super::health::AlarmKind;
use super::trainer::{StepStats, Trainer};
use crate::data::{self, Dataset, LoadOptions};
use crate::export::grid;

/// The copy of the last checkpoint written while no alarm was raised: what
/// [`Session::roll_back`] returns to.
pub const HEALTHY_FILE: &str = "healthy.safetensors";

/// Loads `cfg.data` at the model's resolution and channels.
pub fn load_data(cfg: &TrainConfig) -> Result<Dataset> {
    let m = &cfg.model;
    let opts = LoadOptions { resolution: m.resolution, channels: m.channels, background: cfg.background };
    Ok(data::load(&cfg.data, &opts)?)
}

/// Reads a run directory's `config.toml`.
pub fn read_config(dir: &Path) -> Result<TrainConfig> {
    let path = dir.join("config.toml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    TrainConfig::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// What one call to [`Session::advance`] did.
pub struct Advance {
    /// The step's numbers.
    pub stats: StepStats,
    /// Images per second over the recent steps.
    pub images_per_sec: f64,
    /// Whether the step was written to metrics.jsonl.
    pub logged: bool,
    /// The sample grid written this step, if any.
    pub grid: Option<PathBuf>,
    /// Whether a checkpoint was written this step.
    pub checkpointed: bool,
    /// Whether the run reached its configured number of steps.
    pub finished: bool,
}

/// A trainer bound to its run directory.
pub struct Session {
    /// The trainer.
    pub trainer: Trainer,
    dir: PathBuf,
    metrics: File,
    clock: Instant,
    clock_step: u64,
    rate: f64,
}

impl Session {
    /// Starts a new run in `dir` (created; refused if it already holds a checkpoint).
    pub fn create(cfg: TrainConfig, data: Arc<Dataset>, device: &Device, dir: &Path) -> Result<Self> {
        if dir.join(CHECKPOINT_FILE).exists() {
            bail!("{} already holds a run: pass --resume to continue it, or choose another --out", dir.display());
        }
        let trainer = Trainer::new(cfg, data, device).map_err(|e| anyhow::anyhow!("{e}"))?;
        std::fs::create_dir_all(dir.join("samples")).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut s = Self::open(trainer, dir)?;
        s.checkpoint()?;
        Ok(s)
    }

    /// Resumes the run in `dir` from its checkpoint; `cfg` must be the run's
    /// config (from its `config.toml`), optionally with a larger `steps`.
    pub fn resume(cfg: TrainConfig, data: Arc<Dataset>, device: &Device, dir: &Path) -> Result<Self> {
        let mut trainer = Trainer::new(cfg, data, device).map_err(|e| anyhow::anyhow!("{e}"))?;
        trainer.load_checkpoint(dir)?;
        Self::open(trainer, dir)
    }

    fn open(trainer: Trainer, dir: &Path) -> Result<Self> {
        let path = dir.join("metrics.jsonl");
        let metrics = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let step = trainer.step_count();
        Ok(Self { trainer, dir: dir.to_path_buf(), metrics, clock: Instant::now(), clock_step: step, rate: 0.0 })
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one JSON object to metrics.jsonl, as one write: `writeln!`
    /// into the file made a system call per token (118 a line), and
    /// a crash between two of them left half an object on the last line.
    pub fn record(&mut self, value: serde_json::Value) -> Result<()> {
        self.metrics.write_all(format!("{value}\n").as_bytes()).context("cannot write metrics.jsonl")
    }

    /// Changes a steerable option and records the change with its step.
    pub fn set_option(&mut self, key: &str, value: &str) -> Result<()> {
        self.trainer.set_option(key, value).map_err(|e| anyhow::anyhow!(e))?;
        let step = self.trainer.step_count();
        self.record(json!({ "step": step, "event": "set", "key": key, "value": value }))
    }

    /// Writes a checkpoint now; while no alarm is raised it also becomes
    /// the healthy one that [`Self::roll_back`] returns to.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.trainer.save_checkpoint(&self.dir)?;
        if self.trainer.alarms().is_empty() {
            let bytes = crate::store::read_limited(&self.dir.join(CHECKPOINT_FILE))?;
            crate::store::write_atomic(&self.dir.join(HEALTHY_FILE), &bytes)?;
        }
        Ok(())
    }

    /// Goes back to the last healthy checkpoint, keeping the current
    /// settings, and records the jump in metrics.jsonl. Returns the step.
    pub fn roll_back(&mut self) -> Result<u64> {
        let from = self.trainer.step_count();
        self.trainer.load_checkpoint_file(&self.dir.join(HEALTHY_FILE))?;
        self.trainer.reset_health();
        let step = self.trainer.step_count();
        self.record(json!({ "step": step, "event": "rollback", "from": from }))?;
        (self.clock, self.clock_step) = (Instant::now(), step);
        self.checkpoint()?;
        Ok(step)
    }

    /// Writes the fixed-noise grid for the current step; returns its path.
    pub fn write_grid(&self) -> Result<PathBuf> {
        let imgs = self.trainer.sample_fixed().map_err(|e| anyhow::anyhow!("{e}"))?;
        let pixels: Vec<f32> = imgs.flatten_all()?.to_vec1()?;
        let m = self.trainer.model_config();
        let tiles = grid::batch_to_rgb(&pixels, m.channels, m.resolution);
        let cols = (tiles.len() as f64).sqrt().ceil() as usize;
        let path = self.dir.join("samples").join(format!("step_{:06}.png", self.trainer.step_count()));
        grid::save_png(&grid::grid(&tiles, cols, 2), &path)?;
        Ok(path)
    }

    /// One training step plus the bookkeeping due at it. A NaN or infinite
    /// loss stops here with an error; the last checkpoint is left as it was.
    pub fn advance(&mut self) -> Result<Advance> {
        let stats = self.trainer.step().map_err(|e| anyhow::anyhow!("training step failed: {e}"))?;
        let cfg = self.trainer.config().clone();
        let step = stats.step;
        let elapsed = self.clock.elapsed().as_secs_f64();
        if elapsed >= 1.0 || self.rate == 0.0 {
            let images = (step - self.clock_step) * cfg.batch_size as u64 * (cfg.d_steps_per_g as u64 + 1);
            self.rate = images as f64 / elapsed.max(1e-9) / (cfg.d_steps_per_g as f64 + 1.0);
            self.clock = Instant::now();
            self.clock_step = step;
        }
        let fatal = stats.alarms.iter().any(|a| a.kind == AlarmKind::NonFinite);
        let logged = step.is_multiple_of(cfg.log_every) || !stats.alarms.is_empty();
        if logged {
            let mut line = serde_json::to_value(&stats)?;
            line["images_per_sec"] = json!(self.rate);
            line["lr_g"] = json!(cfg.lr_g);
            line["lr_d"] = json!(cfg.lr_d);
            line["active_alarms"] = json!(self.trainer.alarms().iter().map(|a| a.kind).collect::<Vec<_>>());
            self.record(line)?;
        }
        if fatal {
            bail!(
                "step {step}: NaN or infinite loss/gradient ({}); training stopped, the last good checkpoint in {} is kept",
                stats.alarms.iter().find(|a| a.kind == AlarmKind::NonFinite).map_or("", |a| a.measured.as_str()),
                self.dir.display()
            );
        }
        let finished = step >= cfg.steps;
        let grid = if step.is_multiple_of(cfg.sample_every) || finished { Some(self.write_grid()?) } else { None };
        let checkpointed = step.is_multiple_of(cfg.checkpoint_every) || finished;
        if checkpointed {
            self.checkpoint()?;
        }
        Ok(Advance { stats, images_per_sec: self.rate, logged, grid, checkpointed, finished })
    }
}
