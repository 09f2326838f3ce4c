//! The top bar: open a model, what the current model is, the view switch
//! and the sampling settings (display filter, dropout, class).

use eframe::egui;
use egui::RichText;

use super::{Action, Settings, View};
use crate::worker::ModelInfo;

/// What the top bar shows.
pub struct TopBar<'a> {
    /// The current model.
    pub model: Option<&'a ModelInfo>,
    /// A model being loaded.
    pub loading: Option<&'a str>,
    /// The open dialog is up.
    pub dialog_open: bool,
}

/// "1.23 M" style parameter counts.
fn human_count(n: usize) -> String {
    match n {
        n if n >= 1_000_000 => format!("{:.2} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

impl TopBar<'_> {
    /// Lays out the bar; settings and view are edited in place.
    pub fn show(&self, ui: &mut egui::Ui, view: &mut View, settings: &mut Settings) -> Vec<Action> {
        let mut actions = Vec::new();
        ui.add_space(4.0);
        ui.horizontal(|ui| {
            let open = ui
                .add_enabled(!self.dialog_open, egui::Button::new("Open model\u{2026}"))
                .on_hover_text("Open a .safetensors model or a run directory's model (or drop the file on the window)");
            if open.clicked() {
                actions.push(Action::OpenDialog);
            }
            if let Some(m) = self.model {
                ui.label(RichText::new(&m.name).strong().size(16.0)).on_hover_text(details(m));
                let colour = if m.channels == 1 { "grey" } else { "RGB" };
                let cond = if m.conditional() { format!(" \u{b7} {} classes", m.classes.len()) } else { String::new() };
                ui.label(format!(
                    "{r}\u{d7}{r} {colour} \u{b7} z {z} \u{b7} {p} params{cond} \u{b7} #{h}",
                    r = m.resolution,
                    z = m.z_dim,
                    p = human_count(m.parameters),
                    h = &m.hash[..m.hash.len().min(8)],
                ))
                .on_hover_text(details(m));
            }
            if let Some(spec) = self.loading {
                ui.spinner();
                ui.label(format!("loading {spec}\u{2026}"));
            }
            ui.separator();
            for (v, name) in [(View::Explore, "Explore"), (View::Grid, "Grid"), (View::Train, "Train")] {
                if ui.selectable_label(*view == v, name).clicked() {
                    actions.push(Action::ShowView(v));
                }
            }
            ui.separator();
            ui.label("Display:");
            ui.selectable_value(&mut settings.smooth, false, "Nearest").on_hover_text("Crisp pixels");
            ui.selectable_value(&mut settings.smooth, true, "Smooth").on_hover_text("Bilinear filtering");
            if let Some(m) = self.model {
                if m.has_dropout() {
                    ui.separator();
                    let r = ui.checkbox(&mut settings.dropout, "Dropout in G").on_hover_text(format!(
                        "This model was trained with dropout (p = {:.2}) in G (GANHACKS tip 17); \
                         keep it on at sampling time to see its effect, or switch it off.",
                        m.dropout
                    ));
                    if r.changed() {
                        actions.push(Action::RegenerateAll);
                    }
                    if settings.dropout && ui.button("New noise").on_hover_text("Draw new dropout masks").clicked() {
                        settings.dropout_seed = settings.dropout_seed.wrapping_add(1);
                        actions.push(Action::RegenerateAll);
                    }
                }
                if m.conditional() {
                    ui.separator();
                    let before = settings.class;
                    let name = |c: u32| m.classes.get(c as usize).cloned().unwrap_or_else(|| format!("class {c}"));
                    let label = ui.label("Class:");
                    egui::ComboBox::from_id_salt("class_picker")
                        .selected_text(name(settings.class))
                        .show_ui(ui, |ui| {
                            for c in 0..m.classes.len() as u32 {
                                ui.selectable_value(&mut settings.class, c, name(c));
                            }
                        })
                        .response
                        .labelled_by(label.id)
                        .on_hover_text("The class a conditional model generates");
                    if settings.class != before {
                        actions.push(Action::RegenerateAll);
                    }
                }
            }
        });
        ui.add_space(2.0);
        actions
    }
}

/// The hover text with everything known about the model.
fn details(m: &ModelInfo) -> String {
    format!(
        "source: {}\n{}\nparameters: {}\nhash: {}\ndevice: {}",
        m.source, m.provenance, m.parameters, m.hash, m.device
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_read_well() {
        assert_eq!(super::human_count(999), "999");
        assert_eq!(super::human_count(12_345), "12.3 k");
        assert_eq!(super::human_count(3_456_789), "3.46 M");
    }
}
