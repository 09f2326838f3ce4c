//! The setup column of the Train view: the dataset (built-in, folder, IDX
//! folder or dropped) with its description and samples, the presets, the
//! config form, the run directory and the buttons that start or open a run.

use documented::DocumentedVariants;
use eframe::egui;
use egui::RichText;

use super::{Pick, TrainingPanel, form};
use crate::app::{Action, theme};
use crate::train::TrainConfig;
use crate::train::config::Preset;
use crate::train_worker::TrainCommand;

impl TrainingPanel {
    pub(super) fn show_setup(&mut self, ui: &mut egui::Ui) -> Vec<Action> {
        let mut actions = Vec::new();
        let open = self.run.as_ref().is_some_and(|r| r.open());
        ui.heading("Dataset");
        actions.extend(ui.add_enabled_ui(!open, |ui| self.show_dataset_picker(ui)).inner);
        if let Some((d, tex)) = &self.dataset {
            let kind = if d.channels == 1 { "grey" } else { "RGB" };
            ui.label(format!("{}: {} images, {r}\u{d7}{r} {kind}", d.name, d.count, r = d.resolution));
            if d.classes.is_empty() {
                ui.label("no class labels");
            } else {
                let counts: Vec<String> =
                    d.classes.iter().zip(&d.class_counts).map(|(c, n)| format!("{c} ({n})")).collect();
                ui.label(format!("{} classes: {}", d.classes.len(), counts.join(", ")))
                    .on_hover_text("Sub-folders (or IDX labels) are classes; the conditional preset trains on them");
            }
            if d.skipped > 0 {
                ui.label(RichText::new(format!("{} unreadable files skipped", d.skipped)).color(theme::ERROR));
            }
            let w = ui.available_width().min(400.0);
            ui.add(egui::Image::new(tex).fit_to_exact_size(egui::vec2(w, w * tex.aspect_ratio().recip())));
        }
        ui.separator();
        ui.heading("Config");
        ui.horizontal_wrapped(|ui| {
            ui.label("Presets:");
            for p in Preset::ALL {
                let b = ui.add_enabled(!open, egui::Button::new(p.name()));
                if b.on_hover_text(p.get_variant_docs()).clicked() {
                    self.cfg = p.apply(&self.cfg);
                }
            }
        });
        let editable = |key: &str| !open || TrainConfig::steerable(key);
        if let Some(e) = form::show(ui, &mut self.cfg, &editable) {
            self.form_error = Some(e);
        }
        if let Some(e) = self.form_error.clone() {
            ui.horizontal(|ui| {
                ui.label(RichText::new(e).color(theme::ERROR));
                if ui.small_button("OK").clicked() {
                    self.form_error = None;
                }
            });
        }
        if let Some(run) = self.run.as_ref().filter(|r| r.open()) {
            let changes = form::steerable_changes(&run.config, &self.cfg);
            let label = format!("Apply {} change(s) to the run", changes.len());
            let apply = ui.add_enabled(!changes.is_empty(), egui::Button::new(label));
            if apply.on_hover_text("Each change is recorded with its step in metrics.jsonl").clicked() {
                for (key, value) in changes {
                    self.send(TrainCommand::Set { key, value });
                }
            }
        }
        ui.separator();
        ui.heading("Run");
        actions.extend(ui.add_enabled_ui(!open, |ui| self.show_run_buttons(ui)).inner);
        actions
    }

    fn show_dataset_picker(&mut self, ui: &mut egui::Ui) -> Option<Action> {
        let mut action = None;
        ui.horizontal_wrapped(|ui| {
            for b in crate::data::builtins() {
                let spec = format!("builtin:{}", b.name);
                let chosen = self.cfg.data == spec && self.dataset.is_some();
                if ui.selectable_label(chosen, &spec).on_hover_text(b.description).clicked() {
                    self.choose_dataset(spec, false);
                }
            }
            let folder = ui.button("Image or IDX folder\u{2026}");
            if folder
                .on_hover_text("A folder of images (sub-folders are classes) or of MNIST-style IDX files")
                .clicked()
            {
                action = self.pick_folder(Pick::Dataset, "Choose a dataset folder");
            }
            if self.inspecting.is_some() {
                ui.spinner();
            }
        });
        ui.label(RichText::new("or drop a folder on the window").weak().small());
        action
    }

    fn show_run_buttons(&mut self, ui: &mut egui::Ui) -> Option<Action> {
        let mut action = None;
        ui.horizontal(|ui| {
            let label = ui.label("Run directory:");
            ui.text_edit_singleline(&mut self.out_dir).labelled_by(label.id);
            if ui.button("\u{2026}").on_hover_text("Choose the run directory").clicked() {
                action = self.pick_folder(Pick::Out, "Choose the run directory");
            }
        });
        ui.horizontal(|ui| {
            let ready = self.dataset.is_some() && !self.out_dir.trim().is_empty();
            let start = ui.add_enabled(ready, egui::Button::new(RichText::new("Start training").strong()));
            if start.on_hover_text("Train the config above into the run directory, on its own thread").clicked() {
                let dir = self.out_dir.trim().into();
                self.send(TrainCommand::Start { cfg: self.cfg.clone(), dir });
            }
            if ui.button("Open run\u{2026}").on_hover_text("Show a run directory's curves and grids").clicked() {
                action = self.pick_folder(Pick::Run, "Open a run directory");
            }
        });
        action
    }
}
