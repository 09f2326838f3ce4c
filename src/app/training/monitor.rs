//! The run side of the Train view: state, speed and ETA, the steering
//! buttons, the alarms, the live plots and the sample grid with its history.

use eframe::egui;
use egui::RichText;

use super::{Phase, Run, TrainingPanel, alarms, plots};
use crate::train_worker::TrainCommand;

/// Width of the sample-grid column.
const GRID_WIDTH: f32 = 320.0;

/// "1h 02m", "3m 20s", "12s".
fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        s if s >= 3600 => format!("{}h {:02}m", s / 3600, s / 60 % 60),
        s if s >= 60 => format!("{}m {:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

impl TrainingPanel {
    pub(super) fn show_monitor(&mut self, ui: &mut egui::Ui) {
        let Some(run) = self.run.as_mut() else {
            ui.centered_and_justified(|ui| {
                ui.label("Choose a dataset and start a run, or open a run directory (or drop one on the window).");
            });
            return;
        };
        let mut commands = Vec::new();
        let mut follow = self.follow_live;
        ui.horizontal_wrapped(|ui| {
            let state = match run.phase {
                Phase::Viewing => "Not training",
                Phase::Running => "Training",
                Phase::Paused => "Paused",
                Phase::Finished => "Finished",
            };
            ui.label(RichText::new(state).strong().size(16.0));
            ui.label(format!("step {} / {}", run.step, run.config.steps));
            if run.phase == Phase::Running && run.images_per_sec > 0.0 {
                let left = run.config.steps.saturating_sub(run.step) as f64 * run.config.batch_size as f64;
                ui.label(format!("{:.0} img/s \u{b7} ETA {}", run.images_per_sec, duration(left / run.images_per_sec)))
                    .on_hover_text("Images per second through G over the recent steps; time left at that speed");
            }
            ui.separator();
            match run.phase {
                Phase::Running => {
                    if ui.button("Pause").clicked() {
                        commands.push(TrainCommand::Pause);
                    }
                }
                Phase::Paused | Phase::Finished => {
                    if ui.button("Resume").on_hover_text("Continue stepping").clicked() {
                        commands.push(TrainCommand::Continue);
                    }
                }
                Phase::Viewing => {
                    let steps = &mut self.cfg.steps;
                    let label = ui.label("to step");
                    ui.add(egui::DragValue::new(steps).range(1..=u64::MAX).speed(10.0)).labelled_by(label.id);
                    let resume = egui::Button::new("Resume run");
                    if ui.add_enabled(*steps > run.step, resume).on_hover_text("Continue from its checkpoint").clicked()
                    {
                        commands.push(TrainCommand::Resume { dir: run.dir.clone(), steps: *steps });
                    }
                }
            }
            if run.open() {
                if ui.button("Stop").on_hover_text("Write a checkpoint and end the run").clicked() {
                    commands.push(TrainCommand::Stop);
                }
                if ui.button("Save checkpoint").clicked() {
                    commands.push(TrainCommand::SaveCheckpoint);
                }
                ui.checkbox(&mut follow, "Explore the live generator").on_hover_text(
                    "The Explore and Grid views sample this run's generator (EMA weights when enabled), \
                     updated as it trains, without pausing it",
                );
            }
        });
        let saved = run.checkpoint.map(|s| format!(" \u{b7} last checkpoint at step {s}")).unwrap_or_default();
        ui.label(RichText::new(format!("{}{saved}", run.dir.display())).weak().small());
        ui.separator();
        if alarms::show(ui, &run.active, &run.curves, run.open()) {
            commands.push(TrainCommand::RollBack);
        }
        ui.separator();
        let height = ui.available_height();
        ui.horizontal_top(|ui| {
            let plot_width = (ui.available_width() - GRID_WIDTH - 12.0).max(200.0);
            ui.vertical(|ui| {
                ui.set_width(plot_width);
                plots::show(ui, &run.curves, run.config.health.grad_norm_limit, height - 8.0);
            });
            ui.vertical(|ui| show_grid(ui, run));
        });
        if follow != self.follow_live {
            self.follow_live = follow;
            commands.push(TrainCommand::FollowLive(follow));
        }
        for c in commands {
            self.send(c);
        }
    }
}

/// The fixed-noise grid of the chosen step, with a slider through the history.
fn show_grid(ui: &mut egui::Ui, run: &mut Run) {
    ui.set_width(GRID_WIDTH);
    ui.label(RichText::new("Fixed-noise samples").strong())
        .on_hover_text("The same latents (seeds 0..grid_size) every time, so grids compare across steps");
    let Some(last) = run.grids.len().checked_sub(1) else {
        ui.label(format!("the first grid comes at step {}", run.config.sample_every));
        return;
    };
    let mut i = run.grid_pick.unwrap_or(last).min(last);
    let (step, tex) = &run.grids[i];
    ui.add(egui::Image::new(tex).fit_to_exact_size(egui::vec2(GRID_WIDTH, GRID_WIDTH)));
    ui.label(format!("step {step}"));
    if last > 0 {
        ui.spacing_mut().slider_width = GRID_WIDTH - 60.0;
        let label = ui.label("history");
        let slider = egui::Slider::new(&mut i, 0..=last).show_value(false);
        if ui.add(slider).labelled_by(label.id).changed() {
            run.grid_pick = (i < last).then_some(i);
        }
    }
}
