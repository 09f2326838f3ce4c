//! The explorer app: an [`eframe::App`] that drags between sphere latents
//! and shows slerp against lerp, live.
//!
//! The app owns a [`Worker`] (model and device live there), sends it
//! [`Command`]s built from what the user does, and draws the images that
//! come back through [`crate::render`]. Views return [`Action`]s, applied
//! after layout, in one place. Nothing here touches candle.

mod action;
mod bookmarks;
mod canvas;
mod explore;
pub mod export_dialog;
mod export_form;
pub mod export_job;
mod file_dialog;
mod grid_view;
mod model_panel;
mod norm_plot;
pub mod probe;
mod status;
mod theme;
pub mod training;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use eframe::egui;

use crate::render::{self, ImageSource};
use crate::worker::{Command, Event, Generate, Images, ModelInfo, Target, Worker};
pub use action::{Action, View};

/// Opens the app window on `model_spec` (`None`: the embedded default).
pub fn run(model_spec: Option<String>) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("ganscope")
            .with_inner_size([1280.0, 800.0])
            .with_min_inner_size([960.0, 640.0])
            .with_drag_and_drop(true),
        renderer: eframe::Renderer::Wgpu,
        ..Default::default()
    };
    eframe::run_native(
        "ganscope",
        options,
        Box::new(move |cc| {
            let app = ExplorerApp::new(&cc.egui_ctx, cc.wgpu_render_state.as_ref(), model_spec)?;
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
}

/// A random seed for new anchors and shuffles: below a million, so it
/// reads and types easily.
pub fn random_seed() -> u64 {
    rand::random_range(0..1_000_000)
}

/// Sampling settings from the top bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Bilinear instead of nearest filtering of the displayed images.
    pub smooth: bool,
    /// Keep G's dropout on at sampling time (tip 17; models with dropout only).
    pub dropout: bool,
    /// Seed of the dropout masks.
    pub dropout_seed: u64,
    /// Class of a conditional model.
    pub class: u32,
}

/// Timings of the last answered request per target.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timing {
    /// From sending the request to receiving the images.
    pub round_trip: Duration,
    /// Time in the generator.
    pub generate: Duration,
}

/// Where things were drawn in the last frame (for tests and tooltips).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Layout {
    /// The latent canvas.
    pub canvas: Option<egui::Rect>,
    /// The slerp and lerp images under the probe.
    pub probe: Option<[egui::Rect; 2]>,
    /// The strip of frames (both rows).
    pub strip: Option<egui::Rect>,
    /// The sample grid.
    pub grid: Option<egui::Rect>,
}

/// The explorer.
pub struct ExplorerApp {
    worker: Worker,
    has_wgpu: bool,
    model: Option<ModelInfo>,
    loading: Option<String>,
    view: View,
    settings: Settings,
    explore: explore::ExploreState,
    grid: grid_view::GridState,
    images: HashMap<Target, Images>,
    pending: HashMap<Target, (u64, Instant)>,
    dirty: Vec<Target>,
    timings: HashMap<Target, Timing>,
    stale_dropped: u64,
    next_request: u64,
    last_error: Option<String>,
    picked: (Sender<PathBuf>, Receiver<PathBuf>),
    dialog_open: bool,
    fell_back: bool,
    layout: Layout,
    training: training::TrainingPanel,
    export: export_dialog::ExportDialog,
}

impl ExplorerApp {
    /// Builds the app and starts loading `model_spec` on the worker. With no
    /// `render_state` the images are replaced by a notice (no panic).
    pub fn new(
        ctx: &egui::Context,
        render_state: Option<&egui_wgpu::RenderState>,
        model_spec: Option<String>,
    ) -> anyhow::Result<Self> {
        if let Some(rs) = render_state {
            render::install(rs);
        }
        let wake_ctx = ctx.clone();
        let worker = crate::worker::spawn(Box::new(move || wake_ctx.request_repaint()))
            .context("cannot start the generator thread")?;
        let loading = model_spec.clone().unwrap_or_else(|| "builtin:emoji".into());
        worker.send(Command::LoadModel(model_spec));
        Ok(Self {
            worker,
            has_wgpu: render_state.is_some(),
            model: None,
            loading: Some(loading),
            view: View::Explore,
            settings: Settings { smooth: false, dropout: true, dropout_seed: 0, class: 0 },
            explore: explore::ExploreState::default(),
            grid: grid_view::GridState::default(),
            images: HashMap::new(),
            pending: HashMap::new(),
            dirty: Vec::new(),
            timings: HashMap::new(),
            stale_dropped: 0,
            next_request: 1,
            last_error: None,
            picked: mpsc::channel(),
            dialog_open: false,
            fell_back: false,
            layout: Layout::default(),
            training: training::TrainingPanel::new(ctx).context("cannot start the training thread")?,
            export: export_dialog::ExportDialog::new(ctx),
        })
    }

    /// True when no model load or request is outstanding for the shown view.
    pub fn is_idle(&self) -> bool {
        self.loading.is_none() && self.pending.is_empty() && !self.dirty.iter().any(|t| self.visible(*t))
    }

    /// The current model.
    pub fn model(&self) -> Option<&ModelInfo> {
        self.model.as_ref()
    }

    /// The last images received for a target.
    pub fn images(&self, target: Target) -> Option<&Images> {
        self.images.get(&target)
    }

    /// The error line, if any.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Where things were drawn in the last frame.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The shown view.
    pub fn view(&self) -> View {
        self.view
    }

    /// Timings of the last answered request per target.
    pub fn timing(&self, target: Target) -> Option<Timing> {
        self.timings.get(&target).copied()
    }

    /// The anchors on the canvas.
    pub fn anchors(&self) -> &[probe::Anchor] {
        &self.explore.anchors
    }

    /// The probe position in canvas units ([0, 1]^2).
    pub fn probe(&self) -> egui::Pos2 {
        self.explore.probe
    }

    /// The screen position of a canvas point (canvas units), as of the last frame.
    pub fn canvas_point(&self, p: egui::Pos2) -> Option<egui::Pos2> {
        self.layout.canvas.map(|r| canvas::canvas_to_screen(r, p))
    }

    /// Moves the probe (canvas units) as a drag would.
    pub fn set_probe(&mut self, p: egui::Pos2) {
        self.explore.probe = p;
        self.mark_dirty(Target::Probe);
    }

    /// Opens a model the way the dialog and a dropped file do.
    pub fn open_model(&mut self, spec: impl Into<String>) {
        self.apply(Action::OpenModel(spec.into()));
    }

    /// The training panel.
    pub fn training(&self) -> &training::TrainingPanel {
        &self.training
    }

    /// The training panel, to set it up as its widgets would.
    pub fn training_mut(&mut self) -> &mut training::TrainingPanel {
        &mut self.training
    }

    /// The export dialog.
    pub fn export_dialog(&self) -> &export_dialog::ExportDialog {
        &self.export
    }

    /// Saves a bookmark as the Save bookmark dialog does.
    pub fn save_bookmark(&mut self, path: &Path) {
        let (export, mut scene) = self.export_scene();
        let actions = export.save_bookmark(&mut scene, path);
        actions.into_iter().for_each(|a| self.apply(a));
    }

    /// Loads a bookmark as the Load bookmark dialog does.
    pub fn load_bookmark(&mut self, path: &Path) {
        let (export, mut scene) = self.export_scene();
        let actions = export.load_bookmark(&mut scene, path);
        actions.into_iter().for_each(|a| self.apply(a));
    }

    /// The export dialog beside the parts of the app a bookmark reads and restores.
    fn export_scene(&mut self) -> (&mut export_dialog::ExportDialog, bookmarks::Scene<'_>) {
        let scene =
            bookmarks::Scene { explore: &mut self.explore, settings: &mut self.settings, model: self.model.as_ref() };
        (&mut self.export, scene)
    }

    /// Whether a target is on screen in the current view.
    fn visible(&self, target: Target) -> bool {
        match target {
            Target::Probe | Target::Strip => self.view == View::Explore,
            Target::Grid => self.view == View::Grid,
        }
    }

    fn mark_dirty(&mut self, target: Target) {
        if !self.dirty.contains(&target) {
            self.dirty.push(target);
        }
    }

    /// Handles what the worker sent.
    fn drain_events(&mut self) {
        while let Some(event) = self.worker.try_recv() {
            match event {
                Event::ModelLoaded(info) => {
                    self.loading = None;
                    self.last_error = None;
                    if self.settings.class as usize >= info.classes.len() {
                        self.settings.class = 0;
                    }
                    self.settings.dropout = info.has_dropout();
                    self.model = Some(info);
                    self.explore.model_changed();
                    for t in [Target::Probe, Target::Strip, Target::Grid] {
                        self.mark_dirty(t);
                    }
                }
                Event::Images(images) => {
                    if let Some((id, sent)) = self.pending.get(&images.target).copied()
                        && id == images.request_id
                    {
                        self.pending.remove(&images.target);
                        let timing = Timing { round_trip: sent.elapsed(), generate: images.generate_time };
                        self.timings.insert(images.target, timing);
                    }
                    self.stale_dropped = images.stale_dropped;
                    let newer = self.images.get(&images.target).is_none_or(|old| old.request_id < images.request_id);
                    if newer {
                        self.images.insert(images.target, images);
                    }
                }
                Event::Error { request, message } => {
                    match request {
                        Some((target, id)) => {
                            if self.pending.get(&target).is_some_and(|p| p.0 == id) {
                                self.pending.remove(&target);
                            }
                        }
                        None => self.loading = None,
                    }
                    tracing::warn!("{message}");
                    let mut message = message;
                    if request.is_none() && self.model.is_none() && !self.fell_back {
                        // The model asked for at start-up failed: open the
                        // embedded one so there is something to explore.
                        self.fell_back = true;
                        self.loading = Some("builtin:emoji".into());
                        self.worker.send(Command::LoadModel(None));
                        message.push_str(" (opened the built-in model instead)");
                    }
                    self.last_error = Some(message);
                }
            }
        }
    }

    /// Applies one action.
    fn apply(&mut self, action: Action) {
        match action {
            Action::OpenDialog => self.open_dialog(),
            Action::OpenModel(spec) => {
                self.loading = Some(spec.clone());
                self.worker.send(Command::LoadModel(Some(spec)));
            }
            Action::ShowView(v) => self.view = v,
            Action::AddAnchor(seed) => {
                if self.explore.add_anchor(seed, true) {
                    self.mark_dirty(Target::Probe);
                    self.mark_dirty(Target::Strip);
                } else {
                    self.last_error = Some(format!("at most {} anchors: remove one first", theme::MAX_ANCHORS));
                }
            }
            Action::Regenerate(t) => self.mark_dirty(t),
            Action::RegenerateAll => {
                for t in [Target::Probe, Target::Strip, Target::Grid] {
                    self.mark_dirty(t);
                }
            }
            Action::DismissError => self.last_error = None,
            Action::ShowError(message) => self.last_error = Some(message),
            Action::ShowExport => self.export.open(),
            Action::SaveBookmark => self.export.ask_save_bookmark().into_iter().for_each(|a| self.apply(a)),
            Action::LoadBookmark => self.export.ask_load_bookmark().into_iter().for_each(|a| self.apply(a)),
            Action::UseLiveModel { source, bytes } => {
                self.export.follow_live(source.clone(), bytes.clone());
                self.worker.send(Command::LoadModelBytes { source, bytes });
            }
        }
    }

    /// Runs the file dialog on its own thread; the pick arrives on `picked`.
    fn open_dialog(&mut self) {
        if self.dialog_open {
            return;
        }
        self.dialog_open = true;
        let tx = self.picked.0.clone();
        let _ = std::thread::Builder::new().name("ganscope-open-dialog".into()).spawn(move || {
            let file = rfd::FileDialog::new()
                .set_title("Open a ganscope model")
                .add_filter("ganscope model", &["safetensors"])
                .pick_file();
            // An empty path says "cancelled".
            let _ = tx.send(file.unwrap_or_default());
        });
    }

    /// Sends the requests of dirty targets that are on screen.
    fn send_requests(&mut self) {
        let Some(model) = &self.model else { return };
        let dim = model.z_dim;
        let class = model.conditional().then_some(self.settings.class);
        let dropout_seed = (model.has_dropout() && self.settings.dropout).then_some(self.settings.dropout_seed);
        let dirty = std::mem::take(&mut self.dirty);
        for target in dirty {
            if !self.visible(target) {
                self.dirty.push(target);
                continue;
            }
            let latents = match target {
                Target::Probe => self.explore.probe_latents(dim),
                Target::Strip => self.explore.strip_latents(dim),
                Target::Grid => self.grid.latents(dim),
            };
            let count = latents.len().checked_div(dim).unwrap_or(0);
            if count == 0 {
                continue;
            }
            let request_id = self.next_request;
            self.next_request += 1;
            self.pending.insert(target, (request_id, Instant::now()));
            self.worker.send(Command::Generate(Generate { request_id, target, latents, count, class, dropout_seed }));
        }
    }

    /// The render source for a target's last images.
    fn source(&self, target: Target) -> Option<ImageSource> {
        self.images.get(&target).map(|i| ImageSource {
            key: i.request_id,
            width: i.width,
            height: i.height,
            channels: i.channels,
            count: i.count,
            pixels: i.pixels.clone(),
        })
    }

    /// Files dropped on the window and picks from the dialog.
    fn take_files(&mut self, ctx: &egui::Context) -> Option<Action> {
        if let Ok(path) = self.picked.1.try_recv() {
            self.dialog_open = false;
            if !path.as_os_str().is_empty() {
                return Some(Action::OpenModel(path.display().to_string()));
            }
        }
        let dropped = ctx.input(|i| i.raw.dropped_files.first().map(|f| f.path().to_path_buf()));
        dropped.and_then(|p| self.training.take_drop(p))
    }

    /// A translucent notice while a file is dragged over the window.
    fn paint_drop_hint(ctx: &egui::Context) {
        if ctx.input(|i| i.raw.hovered_files.is_empty()) {
            return;
        }
        let painter = ctx.layer_painter(egui::LayerId::new(egui::Order::Foreground, egui::Id::unique("drop_hint")));
        let rect = ctx.content_rect();
        painter.rect_filled(rect, 0.0, egui::Color32::from_black_alpha(180));
        painter.text(
            rect.center(),
            egui::Align2::CENTER_CENTER,
            "Drop a .safetensors model, a dataset folder or a run directory",
            egui::FontId::proportional(24.0),
            egui::Color32::WHITE,
        );
    }
}

impl eframe::App for ExplorerApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.drain_events();
        let ctx = ui.ctx().clone();
        let mut actions = self.training.drain();
        actions.extend(self.take_files(&ctx));

        let bar = model_panel::TopBar {
            model: self.model.as_ref(),
            loading: self.loading.as_deref(),
            dialog_open: self.dialog_open,
        };
        actions
            .extend(egui::Panel::top("top_bar").show(ui, |ui| bar.show(ui, &mut self.view, &mut self.settings)).inner);
        let line = status::StatusLine {
            model: self.model.as_ref(),
            timings: &self.timings,
            stale_dropped: self.stale_dropped,
            busy: !self.pending.is_empty() || self.loading.is_some(),
            error: self.last_error.as_deref(),
        };
        actions.extend(egui::Panel::bottom("status_bar").show(ui, |ui| line.show(ui)).inner);

        self.layout = Layout::default();
        let model_dim = self.model.as_ref().map(|m| m.z_dim);
        match self.view {
            View::Explore => {
                let side = egui::Panel::left("canvas_panel")
                    .resizable(false)
                    .exact_size(explore::SIDE_PANEL_WIDTH)
                    .show(ui, |ui| self.explore.show_side(ui, model_dim));
                let (canvas, side_actions) = side.inner;
                self.layout.canvas = Some(canvas);
                actions.extend(side_actions);
                let probe = self.source(Target::Probe);
                let strip = self.source(Target::Strip);
                let main = egui::CentralPanel::default().show(ui, |ui| {
                    let shown = explore::Shown {
                        probe: probe.as_ref(),
                        strip: strip.as_ref(),
                        smooth: self.settings.smooth,
                        has_wgpu: self.has_wgpu,
                        waiting: self.model.is_none(),
                    };
                    self.explore.show_main(ui, model_dim, &shown)
                });
                let (probe_rects, strip_rect) = main.inner;
                self.layout.probe = probe_rects;
                self.layout.strip = strip_rect;
            }
            View::Grid => {
                let grid = self.source(Target::Grid);
                let inner = egui::CentralPanel::default().show(ui, |ui| {
                    self.grid.show(ui, grid.as_ref(), self.settings.smooth, self.has_wgpu, model_dim.is_some())
                });
                let (rect, grid_actions) = inner.inner;
                self.layout.grid = rect;
                actions.extend(grid_actions);
            }
            View::Train => actions.extend(self.training.show(ui)),
        }
        let (export, mut scene) = self.export_scene();
        actions.extend(export.show(&ctx, &mut scene));
        Self::paint_drop_hint(&ctx);

        for action in actions {
            self.apply(action);
        }
        for t in self.explore.take_changes() {
            self.mark_dirty(t);
        }
        if self.grid.take_changed() {
            self.mark_dirty(Target::Grid);
        }
        self.send_requests();
    }
}
