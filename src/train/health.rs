//! The health monitor (tip 10): watches every step for the known signs of a
//! failing GAN and raises named alarms that say what was measured, since
//! which step, and what to try.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::config::HealthConfig;

/// The failure signs we look for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    /// D's loss near zero over the window: D wins outright, G gets no signal.
    DLossZero,
    /// Gradient norm of G over the limit.
    GGradExplosion,
    /// Gradient norm of D over the limit.
    DGradExplosion,
    /// D's loss swings widely over the window.
    DLossUnstable,
    /// G's loss drifts steadily while D keeps winning.
    GLossDrift,
    /// G's samples are much less diverse than real batches: mode collapse.
    ModeCollapse,
    /// A loss or gradient is NaN or infinite; training stops.
    NonFinite,
}

impl AlarmKind {
    /// A short name for people.
    pub fn title(self) -> &'static str {
        match self {
            AlarmKind::DLossZero => "D loss near zero",
            AlarmKind::GGradExplosion => "G gradient explosion",
            AlarmKind::DGradExplosion => "D gradient explosion",
            AlarmKind::DLossUnstable => "D loss unstable",
            AlarmKind::GLossDrift => "G loss drifting",
            AlarmKind::ModeCollapse => "mode collapse",
            AlarmKind::NonFinite => "NaN or Inf",
        }
    }

    /// What to try, with the GANHACKS tip that addresses it.
    pub fn advice(self) -> &'static str {
        match self {
            AlarmKind::DLossZero => {
                "D wins: soften labels (tip 6), add instance noise (tip 13), lower lr_d or raise lr_g"
            }
            AlarmKind::GGradExplosion | AlarmKind::DGradExplosion => {
                "exploding gradients: lower the learning rates, enable spectral_norm, or use the hinge loss"
            }
            AlarmKind::DLossUnstable => {
                "D oscillates: lower lr_d, raise beta2 stability with lower beta1, or add instance noise (tip 13)"
            }
            AlarmKind::GLossDrift => {
                "G cannot catch up: try the nonsaturating loss (tip 2), label flips (tip 6), or d_steps_per_g = 1"
            }
            AlarmKind::ModeCollapse => {
                "mode collapse: enable minibatch_stddev (tip 15), experience replay (tip 8), or dropout in G (tip 17)"
            }
            AlarmKind::NonFinite => {
                "NaN/Inf: lower the learning rates; training stopped and the last good checkpoint is kept"
            }
        }
    }
}

/// A raised alarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    /// Which sign.
    pub kind: AlarmKind,
    /// The first step of the streak that raised it.
    pub since: u64,
    /// What was measured, in words and numbers.
    pub measured: String,
    /// What to try.
    pub advice: String,
}

/// What one training step measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Observation {
    /// The step.
    pub step: u64,
    /// D's total loss.
    pub d_loss: f32,
    /// G's loss.
    pub g_loss: f32,
    /// Mean D(x) on reals.
    pub d_real: f32,
    /// Mean D(G(z)) on fakes.
    pub d_fake: f32,
    /// Global gradient norm of G.
    pub g_grad: f32,
    /// Global gradient norm of D.
    pub d_grad: f32,
    /// Fake/real diversity ratio, when measured this step.
    pub diversity: Option<f32>,
}

/// Sliding windows over recent steps and the alarms currently raised.
#[derive(Debug, Clone)]
pub struct HealthMonitor {
    cfg: HealthConfig,
    recent: VecDeque<Observation>,
    active: Vec<Alarm>,
}

impl HealthMonitor {
    /// A monitor with `cfg`'s thresholds.
    pub fn new(cfg: HealthConfig) -> Self {
        Self { cfg, recent: VecDeque::new(), active: Vec::new() }
    }

    /// The alarms raised now.
    pub fn active(&self) -> &[Alarm] {
        &self.active
    }

    /// Takes one step's numbers; returns alarms newly raised by it.
    pub fn observe(&mut self, o: Observation) -> Vec<Alarm> {
        self.recent.push_back(o);
        while self.recent.len() > self.cfg.window {
            self.recent.pop_front();
        }
        let mut now: Vec<(AlarmKind, String)> = Vec::new();
        let finite = [o.d_loss, o.g_loss, o.g_grad, o.d_grad].iter().all(|v| v.is_finite());
        if !finite {
            now.push((
                AlarmKind::NonFinite,
                format!("d_loss {} g_loss {} |grad G| {} |grad D| {}", o.d_loss, o.g_loss, o.g_grad, o.d_grad),
            ));
        }
        let limit = self.cfg.grad_norm_limit as f32;
        let streak = self.cfg.grad_norm_steps.max(1);
        let over = |grad: fn(&Observation) -> f32| {
            self.recent.len() >= streak && self.recent.iter().rev().take(streak).all(|o| grad(o) > limit)
        };
        if over(|o| o.g_grad) {
            now.push((AlarmKind::GGradExplosion, format!("|grad G| = {:.1} > {limit} for {streak}+ steps", o.g_grad)));
        }
        if over(|o| o.d_grad) {
            now.push((AlarmKind::DGradExplosion, format!("|grad D| = {:.1} > {limit} for {streak}+ steps", o.d_grad)));
        }
        // Diversity is measured every few steps: judge the last three measurements.
        let divs: Vec<f32> = self.recent.iter().rev().filter_map(|o| o.diversity).take(3).collect();
        let floor = self.cfg.diversity_floor as f32;
        if o.step >= self.cfg.grace_steps && divs.len() == 3 && divs.iter().all(|d| *d < floor) {
            now.push((AlarmKind::ModeCollapse, format!("fake diversity is {:.0}% of real", divs[0] * 100.0)));
        }
        if self.recent.len() == self.cfg.window && finite {
            let d: Vec<f64> = self.recent.iter().map(|o| o.d_loss as f64).collect();
            let (mean, std) = mean_std(&d);
            if mean < self.cfg.d_loss_floor {
                now.push((AlarmKind::DLossZero, format!("mean D loss {mean:.4} over {} steps", d.len())));
            }
            if std > self.cfg.d_loss_std_limit {
                now.push((AlarmKind::DLossUnstable, format!("D loss std {std:.2} over {} steps", d.len())));
            }
            let d_wins = self.recent.iter().all(|o| o.d_real > 0.8 && o.d_fake < 0.2);
            let g: Vec<f64> = self.recent.iter().map(|o| o.g_loss as f64).collect();
            let (slope, r2) = trend(&g);
            if d_wins && r2 > 0.6 {
                now.push((
                    AlarmKind::GLossDrift,
                    format!("G loss moves {slope:+.4}/step (R^2 {r2:.2}) while D(x) > 0.8 and D(G(z)) < 0.2"),
                ));
            }
        }
        let mut raised = Vec::new();
        self.active.retain(|a| now.iter().any(|(k, _)| *k == a.kind));
        for (kind, measured) in now {
            match self.active.iter_mut().find(|a| a.kind == kind) {
                Some(a) => a.measured = measured,
                None => {
                    let since = match kind {
                        AlarmKind::DLossZero => self.streak_start(|o| (o.d_loss as f64) < self.cfg.d_loss_floor),
                        AlarmKind::DLossUnstable => self.first_outlier(),
                        AlarmKind::GLossDrift => self.recent.front().map_or(o.step, |f| f.step),
                        AlarmKind::GGradExplosion => self.streak_start(|o| o.g_grad > limit),
                        AlarmKind::DGradExplosion => self.streak_start(|o| o.d_grad > limit),
                        _ => o.step,
                    };
                    let a = Alarm { kind, since, measured, advice: kind.advice().to_string() };
                    raised.push(a.clone());
                    self.active.push(a);
                }
            }
        }
        raised
    }
}

impl HealthMonitor {
    /// The first step in the window whose D loss is further than the
    /// oscillation limit from the window's mean: where the swings began.
    fn first_outlier(&self) -> u64 {
        let d: Vec<f64> = self.recent.iter().map(|o| o.d_loss as f64).collect();
        let (mean, _) = mean_std(&d);
        self.recent
            .iter()
            .find(|o| (o.d_loss as f64 - mean).abs() > self.cfg.d_loss_std_limit)
            .or(self.recent.front())
            .map_or(0, |o| o.step)
    }

    /// The first step of the trailing run of observations meeting `bad`.
    fn streak_start(&self, bad: impl Fn(&Observation) -> bool) -> u64 {
        let mut since = self.recent.back().map_or(0, |o| o.step);
        for o in self.recent.iter().rev() {
            if !bad(o) {
                break;
            }
            since = o.step;
        }
        since
    }
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Least-squares slope per step and R^2 of a linear fit.
fn trend(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let xm = (n - 1.0) / 2.0;
    let (ym, _) = mean_std(v);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (i, y) in v.iter().enumerate() {
        let dx = i as f64 - xm;
        sxy += dx * (y - ym);
        sxx += dx * dx;
        syy += (y - ym).powi(2);
    }
    if sxx == 0.0 || syy == 0.0 {
        return (0.0, 0.0);
    }
    (sxy / sxx, sxy * sxy / (sxx * syy))
}

/// Mean pairwise distance between the images of a batch (rows of `len`
/// floats): the diversity measure behind the mode-collapse alarm.
pub fn diversity(batch: &[f32], len: usize) -> f32 {
    let rows: Vec<&[f32]> = batch.chunks_exact(len).collect();
    let mut total = 0.0f64;
    let mut pairs = 0usize;
    for i in 0..rows.len() {
        for j in (i + 1)..rows.len() {
            let d: f64 = rows[i].iter().zip(rows[j]).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
            total += d.sqrt();
            pairs += 1;
        }
    }
    if pairs == 0 { 0.0 } else { (total / pairs as f64) as f32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy(step: u64) -> Observation {
        let wobble = ((step * 7919) % 13) as f32 / 13.0;
        Observation {
            step,
            d_loss: 1.2 + 0.2 * wobble,
            g_loss: 1.0 + 0.3 * wobble,
            d_real: 0.6,
            d_fake: 0.4,
            g_grad: 3.0,
            d_grad: 4.0,
            diversity: Some(0.9),
        }
    }

    #[test]
    fn mode_collapse_waits_for_the_grace_period_and_three_measurements() {
        let mut m = HealthMonitor::new(HealthConfig::default());
        let collapsed = |s| Observation { diversity: if s % 10 == 0 { Some(0.01) } else { None }, ..healthy(s) };
        let early: Vec<Alarm> = (0..200).flat_map(|s| m.observe(collapsed(s))).collect();
        assert!(early.is_empty(), "{early:?}");
        let late: Vec<Alarm> = (200..260).flat_map(|s| m.observe(collapsed(s))).collect();
        assert_eq!(late.len(), 1, "raised once and kept active between measurements: {late:?}");
    }

    #[test]
    fn quiet_when_healthy() {
        let mut m = HealthMonitor::new(HealthConfig::default());
        for s in 0..200 {
            assert!(m.observe(healthy(s)).is_empty());
        }
    }

    #[test]
    fn lone_gradient_spikes_stay_quiet() {
        let mut m = HealthMonitor::new(HealthConfig::default());
        for s in 0..200 {
            let spike = s % 4 == 0;
            let o = Observation { d_grad: if spike { 300.0 } else { 40.0 }, ..healthy(s) };
            assert!(m.observe(o).is_empty(), "step {s}");
        }
    }

    #[test]
    fn fires_on_each_planted_failure() {
        type Plant = fn(Observation) -> Observation;
        let cases: [(AlarmKind, Plant); 6] = [
            (AlarmKind::DLossZero, |o| Observation { d_loss: 0.001, d_real: 0.99, d_fake: 0.01, ..o }),
            (AlarmKind::GGradExplosion, |o| Observation { g_grad: 500.0, ..o }),
            (AlarmKind::DGradExplosion, |o| Observation { d_grad: 1e4, ..o }),
            (AlarmKind::DLossUnstable, |o| Observation { d_loss: if o.step % 2 == 0 { 0.1 } else { 6.0 }, ..o }),
            (AlarmKind::ModeCollapse, |o| Observation { diversity: Some(0.01), ..o }),
            (AlarmKind::NonFinite, |o| Observation { g_loss: f32::NAN, ..o }),
        ];
        for (kind, plant) in cases {
            let mut m = HealthMonitor::new(HealthConfig { grace_steps: 0, ..HealthConfig::default() });
            let mut raised = Vec::new();
            for s in 0..100 {
                let o = if s >= 40 { plant(healthy(s)) } else { healthy(s) };
                raised.extend(m.observe(o));
            }
            let a = raised.iter().find(|a| a.kind == kind).unwrap_or_else(|| panic!("{kind:?} not raised: {raised:?}"));
            assert!(a.since >= 40, "{kind:?} since {}", a.since);
            assert!(!a.measured.is_empty() && !a.advice.is_empty());
        }
    }

    #[test]
    fn g_drift_needs_a_steady_trend_while_d_wins() {
        let mut m = HealthMonitor::new(HealthConfig::default());
        let mut raised = Vec::new();
        for s in 0..120 {
            raised.extend(m.observe(Observation {
                d_loss: 0.3,
                g_loss: 2.0 + s as f32 * 0.05,
                d_real: 0.9,
                d_fake: 0.1,
                ..healthy(s)
            }));
        }
        assert!(raised.iter().any(|a| a.kind == AlarmKind::GLossDrift));
    }

    #[test]
    fn diversity_is_zero_for_identical_images() {
        assert_eq!(diversity(&[0.5; 12], 3), 0.0);
        assert!(diversity(&[0.0, 0.0, 1.0, 1.0], 2) > 1.0);
    }
}
