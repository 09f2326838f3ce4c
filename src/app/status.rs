//! The status line: device, generation timings, dropped stale requests,
//! and the last error in red.

use std::collections::HashMap;

use eframe::egui;
use egui::RichText;

use super::{Action, Timing, theme};
use crate::worker::{ModelInfo, Target};

/// What the status line shows.
pub struct StatusLine<'a> {
    /// The current model (for the device name).
    pub model: Option<&'a ModelInfo>,
    /// Last timings per target.
    pub timings: &'a HashMap<Target, Timing>,
    /// Stale requests the worker dropped.
    pub stale_dropped: u64,
    /// A request or load is outstanding.
    pub busy: bool,
    /// The error line.
    pub error: Option<&'a str>,
}

impl StatusLine<'_> {
    /// Lays out the line.
    pub fn show(&self, ui: &mut egui::Ui) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(e) = self.error {
            // Its own row, so a long path is never cut off.
            ui.add_space(2.0);
            ui.horizontal(|ui| {
                if ui.small_button("Dismiss").clicked() {
                    actions.push(Action::DismissError);
                }
                ui.add(egui::Label::new(RichText::new(e).color(theme::ERROR)).wrap());
            });
        }
        ui.horizontal(|ui| {
            if let Some(m) = self.model {
                ui.label(format!("device: {}", m.device));
            }
            for (target, name) in [(Target::Probe, "probe"), (Target::Strip, "strip"), (Target::Grid, "grid")] {
                if let Some(t) = self.timings.get(&target) {
                    ui.separator();
                    ui.label(format!(
                        "{name}: generated in {:.1} ms, shown after {:.0} ms",
                        t.generate.as_secs_f64() * 1e3,
                        t.round_trip.as_secs_f64() * 1e3
                    ))
                    .on_hover_text(
                        "Time in the generator, and from sending the request to the frame that draws the images \
                         (that includes waiting for the next frame)",
                    );
                }
            }
            if self.stale_dropped > 0 {
                ui.separator();
                ui.label(format!("{} stale requests skipped", self.stale_dropped))
                    .on_hover_text("While you drag, only the newest request per view is generated");
            }
            if self.busy {
                ui.separator();
                ui.label(RichText::new("working\u{2026}").weak());
            }
        });
        actions
    }
}
