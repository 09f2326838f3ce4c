//! The export dialog: settings, a target, then a progress bar with Cancel
//! while an [`ExportJob`] renders the anchor path off the UI thread. Also
//! answers the bookmark buttons (save and load through file dialogs).
//!
//! Pressing Export captures the scene as a bookmark and renders that
//! bookmark's frame spec: the same frames `ganscope interpolate
//! --keyframes` renders from the bookmark saved at that moment.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use eframe::egui;
use egui::RichText;

use super::bookmarks::{self, Scene};
use super::export_form::{self, ExportForm};
use super::export_job::{ExportJob, ModelSource, Outcome, Request};
use super::file_dialog::{Ask, Dialogs};
use super::{Action, theme};
use crate::export::{Bookmark, Format, FrameSpec, Progress, mp4, target};
use crate::worker::ModelInfo;

/// What a file dialog's answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pick {
    Target,
    SaveBookmark,
    LoadBookmark,
}

/// The export dialog and the bookmark buttons' state.
pub struct ExportDialog {
    open: bool,
    form: ExportForm,
    job: Option<ExportJob>,
    /// How the last export ended (or why it could not start), and its target.
    last: Option<(PathBuf, Outcome)>,
    dialogs: Dialogs<Pick>,
    /// The live generator the training panel last handed over.
    live: Option<(String, Arc<[u8]>)>,
    ctx: egui::Context,
}

impl ExportDialog {
    /// Closed, with the command line's defaults.
    pub fn new(ctx: &egui::Context) -> Self {
        Self {
            open: false,
            form: ExportForm::default(),
            job: None,
            last: None,
            dialogs: Dialogs::new(ctx),
            live: None,
            ctx: ctx.clone(),
        }
    }

    /// Shows the dialog.
    pub fn open(&mut self) {
        self.open = true;
    }

    /// Whether the dialog is shown.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The settings.
    pub fn form(&self) -> &ExportForm {
        &self.form
    }

    /// Whether an export is running.
    pub fn running(&self) -> bool {
        self.job.is_some()
    }

    /// Frames done by the running export, once the model is open.
    pub fn progress(&self) -> Option<Progress> {
        self.job.as_ref().and_then(ExportJob::progress)
    }

    /// How the last export ended, or why it could not start.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.last.as_ref().map(|(_, o)| o)
    }

    /// Remembers the live generator handed to the worker, so it can be exported.
    pub fn follow_live(&mut self, source: String, bytes: Arc<[u8]>) {
        self.live = Some((source, bytes));
    }

    /// Asks where to save a bookmark.
    pub fn ask_save_bookmark(&mut self) -> Vec<Action> {
        let dialog = rfd::FileDialog::new()
            .set_title("Save a bookmark")
            .add_filter("ganscope bookmark", &["json"])
            .set_file_name("bookmark.json");
        self.ask(Pick::SaveBookmark, Ask::Save, dialog)
    }

    /// Asks for a bookmark to load.
    pub fn ask_load_bookmark(&mut self) -> Vec<Action> {
        let dialog = rfd::FileDialog::new().set_title("Load a bookmark").add_filter("ganscope bookmark", &["json"]);
        self.ask(Pick::LoadBookmark, Ask::Open, dialog)
    }

    fn ask(&mut self, pick: Pick, ask: Ask, dialog: rfd::FileDialog) -> Vec<Action> {
        match self.dialogs.show(pick, ask, dialog) {
            Ok(()) => Vec::new(),
            Err(e) => vec![Action::ShowError(format!("cannot open a file dialog: {e}"))],
        }
    }

    /// How the export thread reopens the model on screen, and the spec a
    /// bookmark names it by (none for a live generator, which has no file).
    fn source(&self, model: &ModelInfo) -> (ModelSource, Option<String>) {
        match &self.live {
            Some((source, bytes)) if *source == model.source => {
                (ModelSource::Bytes { source: source.clone(), bytes: Arc::clone(bytes) }, None)
            }
            _ => (ModelSource::Spec(model.source.clone()), Some(model.source.clone())),
        }
    }

    /// Saves the scene as a bookmark at `path`.
    pub fn save_bookmark(&mut self, scene: &mut Scene<'_>, path: &Path) -> Vec<Action> {
        let spec = scene.model.and_then(|m| self.source(m).1);
        match bookmarks::save(scene, &self.form, spec, path) {
            Ok(()) => Vec::new(),
            Err(e) => vec![Action::ShowError(e)],
        }
    }

    /// Loads the bookmark at `path`: anchors, view and export settings.
    pub fn load_bookmark(&mut self, scene: &mut Scene<'_>, path: &Path) -> Vec<Action> {
        match bookmarks::load(scene, &mut self.form, path) {
            Ok(warnings) => {
                let mut actions = vec![Action::RegenerateAll];
                actions.extend(warnings.into_iter().map(|w| Action::ShowError(format!("warning: {w}"))));
                actions
            }
            Err(e) => vec![Action::ShowError(e)],
        }
    }

    /// What Export would render now: the scene's bookmark and its frame spec.
    fn plan(&self, scene: &mut Scene<'_>) -> Result<(Bookmark, FrameSpec), String> {
        let model = scene.model.ok_or("no model is loaded yet")?;
        let (dim, resolution) = (model.z_dim, model.resolution as u32);
        let name = self.source(model).1;
        let bookmark = bookmarks::capture(scene, &self.form, name).ok_or("no model is loaded yet")?;
        let spec = bookmark.frame_spec(dim, resolution)?;
        Ok((bookmark, spec))
    }

    /// Checks the target, then starts rendering the scene's bookmark.
    fn start(&mut self, scene: &mut Scene<'_>) {
        let out = self.form.out_path();
        let fail = |m: String| Some((out.clone(), Outcome::Failed(m)));
        let Some(model) = scene.model else { return };
        // Before any work: a target that cannot be written is reported now.
        if let Err(e) = target::check_target(&out) {
            self.last = fail(e.to_string());
            return;
        }
        let (bookmark, spec) = match self.plan(scene) {
            Ok(p) => p,
            Err(e) => {
                self.last = fail(e);
                return;
            }
        };
        let fps = bookmark.export.as_ref().map_or(self.form.fps, |e| e.fps);
        let request = Request { model: self.source(model).0, hash: model.hash.clone(), spec, fps, out: out.clone() };
        let ctx = self.ctx.clone();
        match ExportJob::start(request, move || ctx.request_repaint()) {
            Ok(job) => {
                self.job = Some(job);
                self.last = None;
            }
            Err(e) => self.last = fail(format!("cannot start the export thread: {e}")),
        }
    }

    /// Opens the target dialog for the chosen format.
    fn choose_target(&mut self) -> Vec<Action> {
        let out = self.form.out_path();
        let mut dialog = rfd::FileDialog::new().set_title("Export to");
        if let Some(dir) = out.parent().filter(|d| d.is_dir()) {
            dialog = dialog.set_directory(dir);
        }
        let format = self.form.format;
        if format == Format::PngFolder {
            return self.ask(Pick::Target, Ask::Folder, dialog);
        }
        dialog = dialog.add_filter(format.name(), &[export_form::extension(format)]);
        if let Some(name) = out.file_name() {
            dialog = dialog.set_file_name(name.to_string_lossy());
        }
        self.ask(Pick::Target, Ask::Save, dialog)
    }

    /// Takes dialog answers and the job's news, and draws the window.
    pub fn show(&mut self, ctx: &egui::Context, scene: &mut Scene<'_>) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some((pick, Some(path))) = self.dialogs.poll() {
            match pick {
                Pick::Target => self.form.set_out(&path),
                Pick::SaveBookmark => actions.extend(self.save_bookmark(scene, &path)),
                Pick::LoadBookmark => actions.extend(self.load_bookmark(scene, &path)),
            }
        }
        if let Some(job) = &mut self.job
            && let Some(outcome) = job.poll()
        {
            self.last = Some((job.out().to_path_buf(), outcome));
            self.job = None;
        }
        if !self.open {
            return actions;
        }
        let mut open = true;
        let mut window = egui::Window::new("Export interpolation")
            .collapsible(false)
            .resizable(false)
            .pivot(egui::Align2::CENTER_CENTER)
            .default_pos(ctx.content_rect().center());
        if self.job.is_none() {
            // No closing mid-export: the progress and Cancel live here.
            window = window.open(&mut open);
        }
        window.show(ctx, |ui| actions.extend(self.contents(ui, scene)));
        self.open = open;
        actions
    }

    /// The window's contents.
    fn contents(&mut self, ui: &mut egui::Ui, scene: &mut Scene<'_>) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(model) = scene.model else {
            ui.label("Waiting for the model\u{2026}");
            return actions;
        };
        let mut names: Vec<String> =
            (0..scene.explore.anchors.len()).map(|i| theme::anchor_letter(i).to_string()).collect();
        if self.form.looped {
            names.push(theme::anchor_letter(0).to_string());
        }
        ui.label(RichText::new(format!("Path: {}", names.join(" - "))).strong())
            .on_hover_text("Through the explorer's anchors, in order; add, remove or reseed them in the side panel");
        if model.has_dropout() && scene.settings.dropout {
            ui.label(RichText::new("Exports sample without dropout in G, as the command line does.").weak());
        }
        ui.add_space(6.0);
        let running = self.job.is_some();
        let can_choose = !self.dialogs.is_open();
        let choose = ui.add_enabled_ui(!running, |ui| self.form.show(ui, model.resolution as u32, can_choose)).inner;
        if choose {
            actions.extend(self.choose_target());
        }
        ui.add_space(6.0);
        let problem = match self.plan(scene) {
            Ok((_, spec)) => {
                let (w, h) = spec.dimensions();
                ui.label(format!(
                    "{} frames of {w}\u{d7}{h} px \u{b7} {:.2} s at {} fps \u{b7} {}",
                    spec.frames,
                    spec.frames as f64 / self.form.fps,
                    self.form.fps,
                    self.form.format.name()
                ));
                let mp4 = self.form.format == Format::Mp4;
                mp4.then(|| mp4::check_dimensions(w, h).err().map(|m| format!("size {}: {m}", spec.size))).flatten()
            }
            Err(e) => Some(e),
        };
        if let Some(p) = &problem {
            ui.label(RichText::new(p).color(theme::ERROR));
        }
        ui.separator();
        match &self.job {
            Some(job) => {
                let p = job.progress();
                let fraction = p.map_or(0.0, |p| p.done as f32 / p.total.max(1) as f32);
                let text = match p {
                    _ if job.cancelling() => "cancelling\u{2026}".to_string(),
                    None => "opening the model\u{2026}".to_string(),
                    Some(p) => format!("{} / {} frames", p.done, p.total),
                };
                ui.horizontal(|ui| {
                    ui.add(egui::ProgressBar::new(fraction).text(text).desired_width(360.0).animate(true));
                    if ui.add_enabled(!job.cancelling(), egui::Button::new("Cancel")).clicked() {
                        job.cancel();
                    }
                });
            }
            None => {
                let start = ui
                    .add_enabled(problem.is_none(), egui::Button::new(RichText::new("Export").strong()))
                    .on_hover_text("Render to the target; it is written under a temporary name and renamed at the end");
                if start.clicked() {
                    self.start(scene);
                }
            }
        }
        if let Some((out, outcome)) = &self.last {
            let file = out.display();
            let (text, color) = match outcome {
                Outcome::Written(s) => (
                    format!(
                        "Wrote {file}: {} frames of {}\u{d7}{} in {:.1} s ({:.0} frames/s).",
                        s.frames,
                        s.dimensions.0,
                        s.dimensions.1,
                        s.seconds,
                        s.frames as f64 / s.seconds.max(1e-9)
                    ),
                    ui.visuals().text_color(),
                ),
                Outcome::Cancelled => (format!("Cancelled: nothing was written to {file}."), ui.visuals().text_color()),
                Outcome::Failed(m) => (m.clone(), theme::ERROR),
            };
            ui.add(egui::Label::new(RichText::new(text).color(color)).wrap());
        }
        actions
    }
}
