//! The alarms panel: what the health monitor sees now (measured value,
//! since which step, the tip that addresses it), what it raised earlier in
//! the run, and the way out: roll back to the last healthy checkpoint.

use eframe::egui;
use egui::RichText;

use super::super::theme;
use crate::train::health::Alarm;
use crate::train::history::Curves;

/// Shows the panel; returns true when the user asks to roll back.
pub fn show(ui: &mut egui::Ui, active: &[Alarm], curves: &Curves, can_roll_back: bool) -> bool {
    let mut roll_back = false;
    ui.horizontal(|ui| {
        let title = if active.is_empty() { "No alarms".to_string() } else { format!("{} alarm(s)", active.len()) };
        let colour = if active.is_empty() { ui.visuals().weak_text_color() } else { theme::ERROR };
        ui.label(RichText::new(title).strong().color(colour))
            .on_hover_text("The health monitor (tip 10) watches every step for the signs of a failing GAN");
        let button = egui::Button::new("Roll back to last healthy checkpoint");
        roll_back = ui
            .add_enabled(can_roll_back, button)
            .on_hover_text(
                "Go back to the last checkpoint written while no alarm was raised, keeping the current \
                 settings: change what the alarm suggests, then roll back and continue",
            )
            .clicked();
    });
    for a in active {
        ui.horizontal_wrapped(|ui| {
            ui.label(RichText::new(a.kind.title()).color(theme::ERROR).strong());
            ui.label(format!("since step {}: {}.", a.since, a.measured));
            ui.label(RichText::new(format!("Try: {}", a.advice)).italics());
        });
    }
    let raised: Vec<(u64, &Alarm)> =
        curves.points.iter().flat_map(|p| p.alarms.iter().map(move |a| (p.step, a))).collect();
    if !raised.is_empty() {
        egui::CollapsingHeader::new(format!("Raised during the run ({})", raised.len())).id_salt("raised_alarms").show(
            ui,
            |ui| {
                egui::ScrollArea::vertical().max_height(120.0).show(ui, |ui| {
                    for (step, a) in raised.iter().rev() {
                        ui.label(format!("step {step}: {}, {}", a.kind.title(), a.measured)).on_hover_text(&a.advice);
                    }
                });
            },
        );
    }
    roll_back
}
