//! The export dialog's settings and their widgets: the look of the path
//! (mode, easing, loop), its length and frame rate, the output size and
//! filter, and where it goes. The defaults are `ganscope interpolate`'s,
//! and the settings travel in a bookmark's fields, so a bookmark exports
//! the same from the app and from the command line.

use std::path::{Path, PathBuf};

use eframe::egui;
use egui::RichText;

use crate::export::frames::{self, Filter, MAX_FPS, MAX_FRAMES, MAX_SIZE};
use crate::export::keyframes::ExportSettings;
use crate::export::{Bookmark, Format};
use crate::latent::{Ease, Mode};

/// The formats in the order the dialog offers them.
const FORMATS: [Format; 3] = [Format::Mp4, Format::Gif, Format::PngFolder];

/// Where an export goes when nothing else was chosen.
const DEFAULT_NAME: &str = "interpolation.mp4";

/// What the export dialog is set to.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportForm {
    /// Interpolation mode of a single-pane export.
    pub mode: Mode,
    /// Slerp and lerp side by side, labelled (`mode` is then unused).
    pub side_by_side: bool,
    /// Easing along each segment.
    pub ease: Ease,
    /// Close the path back to the first anchor.
    pub looped: bool,
    /// The length is given in seconds rather than frames.
    pub by_seconds: bool,
    /// Frames in the whole path (when `by_seconds` is off).
    pub frames: usize,
    /// Length in seconds (when `by_seconds` is on).
    pub seconds: f64,
    /// Frames per second.
    pub fps: f64,
    /// Side of each image; `None` is the exporter's default for the model.
    pub size: Option<u32>,
    /// Upscaling filter.
    pub filter: Filter,
    /// Output format; kept in step with `out`'s extension.
    pub format: Format,
    /// The target file or folder, as typed or picked.
    pub out: String,
}

impl Default for ExportForm {
    fn default() -> Self {
        let out = std::env::current_dir().unwrap_or_default().join(DEFAULT_NAME);
        ExportForm {
            mode: Mode::Slerp,
            side_by_side: false,
            ease: Ease::Linear,
            looped: false,
            by_seconds: false,
            frames: frames::DEFAULT_FRAMES,
            seconds: frames::DEFAULT_FRAMES as f64 / frames::DEFAULT_FPS,
            fps: frames::DEFAULT_FPS,
            size: None,
            filter: Filter::Nearest,
            format: Format::Mp4,
            out: out.display().to_string(),
        }
    }
}

/// The file extension of `format` (none for a PNG folder).
pub fn extension(format: Format) -> &'static str {
    match format {
        Format::Mp4 => "mp4",
        Format::Gif => "gif",
        Format::PngFolder => "",
    }
}

/// `path` with the extension `format` asks for.
fn with_format(path: &str, format: Format) -> String {
    let mut p = PathBuf::from(path);
    p.set_extension(extension(format));
    p.display().to_string()
}

impl ExportForm {
    /// Frames in the whole path; seconds are rounded as the command line does.
    pub fn frames(&self) -> usize {
        if self.by_seconds { (self.seconds * self.fps).round() as usize } else { self.frames }
    }

    /// The settings a bookmark keeps.
    pub fn settings(&self) -> ExportSettings {
        ExportSettings {
            frames: self.frames(),
            fps: self.fps,
            size: self.size,
            filter: self.filter,
            side_by_side: self.side_by_side,
        }
    }

    /// Takes mode, easing, loop and export settings from a bookmark.
    pub fn set_from(&mut self, b: &Bookmark) {
        let e = b.export.clone().unwrap_or_default();
        *self = ExportForm {
            mode: b.mode,
            side_by_side: e.side_by_side,
            ease: b.ease,
            looped: b.looped,
            by_seconds: false,
            frames: e.frames,
            seconds: e.frames as f64 / e.fps,
            fps: e.fps,
            size: e.size,
            filter: e.filter,
            format: self.format,
            out: std::mem::take(&mut self.out),
        };
    }

    /// The target path.
    pub fn out_path(&self) -> PathBuf {
        PathBuf::from(self.out.trim())
    }

    /// Sets the target, and the format its extension asks for.
    pub fn set_out(&mut self, path: &Path) {
        self.out = path.display().to_string();
        if let Ok(f) = Format::from_path(path) {
            self.format = f;
        }
    }

    /// The settings as a grid of labelled widgets. `resolution` is the
    /// model's image side (for the default size); `can_choose` enables
    /// "Choose…" (pick the target in a file dialog), and true is returned
    /// when it was clicked.
    pub fn show(&mut self, ui: &mut egui::Ui, resolution: u32, can_choose: bool) -> bool {
        let mut choose = false;
        egui::Grid::new("export_form").num_columns(2).spacing([12.0, 8.0]).show(ui, |ui| {
            ui.label("Interpolation");
            ui.horizontal(|ui| {
                let panes = [
                    (Mode::Slerp, false, "slerp", "Along the great circle: |z| stays on the sphere"),
                    (Mode::Lerp, false, "lerp", "Along the straight chord: |z| dips, images wash out"),
                    (self.mode, true, "both, side by side", "Slerp left, lerp right, labelled"),
                ];
                for (mode, both, name, help) in panes {
                    let on = self.side_by_side == both && (both || self.mode == mode);
                    if ui.radio(on, name).on_hover_text(help).clicked() {
                        self.mode = mode;
                        self.side_by_side = both;
                    }
                }
            });
            ui.end_row();

            ui.label("Easing");
            ui.horizontal(|ui| {
                ui.radio_value(&mut self.ease, Ease::Linear, "linear").on_hover_text("Constant speed");
                ui.radio_value(&mut self.ease, Ease::EaseInOut, "ease-in-out")
                    .on_hover_text("Slow down at each anchor, speed up between");
            });
            ui.end_row();

            ui.label("Loop");
            ui.checkbox(&mut self.looped, "back to the first anchor, seamless")
                .on_hover_text("The last frame leads into the first by the same step as every other");
            ui.end_row();

            ui.label("Length");
            ui.horizontal(|ui| {
                if self.by_seconds {
                    ui.add(egui::DragValue::new(&mut self.seconds).range(0.1..=3600.0).speed(0.05).suffix(" s"));
                } else {
                    ui.add(egui::DragValue::new(&mut self.frames).range(2..=MAX_FRAMES).speed(0.5).suffix(" frames"));
                }
                let before = self.by_seconds;
                ui.selectable_value(&mut self.by_seconds, false, "frames");
                ui.selectable_value(&mut self.by_seconds, true, "seconds");
                if self.by_seconds != before {
                    // Switching keeps the length the user sees.
                    if self.by_seconds {
                        self.seconds = self.frames as f64 / self.fps;
                    } else {
                        self.frames = self.frames().clamp(2, MAX_FRAMES);
                    }
                }
            });
            ui.end_row();

            let fps = ui.label("Frame rate");
            ui.add(egui::DragValue::new(&mut self.fps).range(1.0..=MAX_FPS).speed(0.2).suffix(" fps"))
                .labelled_by(fps.id);
            ui.end_row();

            let size = ui.label("Size");
            ui.horizontal(|ui| {
                let default = frames::default_size(resolution);
                let mut side = self.size.unwrap_or(default);
                let r = ui
                    .add(egui::DragValue::new(&mut side).range(1..=MAX_SIZE).speed(1.0).suffix(" px"))
                    .labelled_by(size.id)
                    .on_hover_text(format!("Side of each image; the model makes {resolution} px"));
                if r.changed() {
                    self.size = (side != default).then_some(side);
                }
                let r = resolution.max(1);
                let scale = if side.is_multiple_of(r) {
                    format!("{}", side / r)
                } else {
                    format!("{:.2}", side as f32 / r as f32)
                };
                ui.label(RichText::new(format!("{scale}\u{d7} the model's {resolution} px")).weak());
                ui.separator();
                ui.radio_value(&mut self.filter, Filter::Nearest, "nearest").on_hover_text("Crisp square pixels");
                ui.radio_value(&mut self.filter, Filter::Smooth, "smooth").on_hover_text("Bilinear filtering");
            });
            ui.end_row();

            ui.label("Format");
            ui.horizontal(|ui| {
                for f in FORMATS {
                    if ui.radio(self.format == f, f.name()).clicked() && self.format != f {
                        self.format = f;
                        self.out = with_format(&self.out, f);
                    }
                }
            });
            ui.end_row();

            let label = ui.label("Save to");
            ui.horizontal(|ui| {
                let edit = egui::TextEdit::singleline(&mut self.out).desired_width(360.0);
                if ui.add(edit).labelled_by(label.id).changed()
                    && let Ok(f) = Format::from_path(Path::new(self.out.trim()))
                {
                    self.format = f;
                }
                choose = ui.add_enabled(can_choose, egui::Button::new("Choose\u{2026}")).clicked();
            });
            ui.end_row();
        });
        choose
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_command_lines() {
        let f = ExportForm::default();
        assert_eq!(f.settings(), ExportSettings::default());
        assert_eq!((f.mode, f.ease, f.looped), (Mode::Slerp, Ease::Linear, false));
    }

    #[test]
    fn seconds_round_like_the_command_line() {
        let f = ExportForm { by_seconds: true, seconds: 2.51, fps: 24.0, ..ExportForm::default() };
        assert_eq!(f.frames(), 60);
    }

    #[test]
    fn the_format_follows_the_path_and_back() {
        assert_eq!(with_format("/tmp/a.mp4", Format::Gif), "/tmp/a.gif");
        assert_eq!(with_format("/tmp/a.gif", Format::PngFolder), "/tmp/a");
        let mut f = ExportForm::default();
        f.set_out(Path::new("/tmp/x.gif"));
        assert_eq!(f.format, Format::Gif);
    }
}
