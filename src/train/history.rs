//! A run's record: the logged steps, setting changes and sample grids of a
//! run directory, read back from `metrics.jsonl` and `samples/`. The
//! training panel keeps the same [`Curves`] while a run is live, so a run
//! reopened later shows exactly the curves it showed while training.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use super::config::TrainConfig;
use super::run::read_config;
use super::trainer::StepStats;

/// A setting changed mid-run, as recorded in metrics.jsonl.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingChange {
    /// The step it took effect after.
    pub step: u64,
    /// The option (dotted key).
    pub key: String,
    /// The new value, as TOML text.
    pub value: String,
}

/// The logged measurements of a run, in step order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curves {
    /// One entry per logged step (every `log_every` steps and at alarms).
    pub points: Vec<StepStats>,
    /// Setting changes, in order.
    pub settings: Vec<SettingChange>,
}

impl Curves {
    /// Adds a logged step. A step at or before the last one means the run
    /// rolled back: the points after it are dropped, as training redoes them.
    pub fn push(&mut self, stats: StepStats) {
        let keep = self.points.partition_point(|p| p.step < stats.step);
        self.points.truncate(keep);
        self.points.push(stats);
    }

    /// Adds one line of metrics.jsonl: a step, or an event (`set`, `rollback`).
    pub fn push_line(&mut self, line: &str) -> Result<()> {
        let value: Value = serde_json::from_str(line)?;
        let step = value.get("step").and_then(Value::as_u64).context("no `step`")?;
        match value.get("event").and_then(Value::as_str) {
            Some("set") => {
                let text = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                self.settings.push(SettingChange { step, key: text("key"), value: text("value") });
            }
            Some("rollback") => self.points.retain(|p| p.step <= step),
            Some(other) => anyhow::bail!("unknown event `{other}`"),
            None => self.push(serde_json::from_value(value)?),
        }
        Ok(())
    }

    /// The last logged step, 0 when nothing is logged.
    pub fn last_step(&self) -> u64 {
        self.points.last().map_or(0, |p| p.step)
    }
}

/// What a run directory holds.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// The run's config.
    pub config: TrainConfig,
    /// The logged curves.
    pub curves: Curves,
    /// Sample grids by step, in step order.
    pub grids: Vec<(u64, PathBuf)>,
}

/// Reads a run directory. A damaged metrics line is reported with its line
/// number; a missing metrics.jsonl reads as no steps yet.
pub fn read(dir: &Path) -> Result<RunRecord> {
    let config = read_config(dir)?;
    let path = dir.join("metrics.jsonl");
    let mut curves = Curves::default();
    if path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            curves.push_line(line).with_context(|| format!("{} line {}", path.display(), i + 1))?;
        }
    }
    Ok(RunRecord { config, curves, grids: grids(dir) })
}

/// The `samples/step_NNNNNN.png` files of a run, by step.
pub fn grids(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir.join("samples"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step_")?.strip_suffix(".png")?.parse().ok()?;
            Some((step, e.path()))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(step: u64, d_loss: f32) -> String {
        serde_json::to_string(&StepStats { step, d_loss, ..Default::default() }).unwrap()
    }

    #[test]
    fn lines_become_points_and_settings_and_rollbacks_cut_the_curve() {
        let mut c = Curves::default();
        for s in 1..=4 {
            c.push_line(&step(s, s as f32)).unwrap();
        }
        c.push_line(r#"{"step":4,"event":"set","key":"label_flip","value":"0.1"}"#).unwrap();
        c.push_line(r#"{"step":2,"event":"rollback","from":4}"#).unwrap();
        assert_eq!(c.points.iter().map(|p| p.step).collect::<Vec<_>>(), [1, 2]);
        c.push_line(&step(3, 9.0)).unwrap();
        assert_eq!(c.points.last().map(|p| p.d_loss), Some(9.0));
        assert_eq!(c.settings, [SettingChange { step: 4, key: "label_flip".into(), value: "0.1".into() }]);
        assert!(c.push_line("{}").is_err());
    }
}
