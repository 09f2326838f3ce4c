//! The Train view: choose a dataset, set every option, start a run on the
//! training thread and watch it live; steer it, roll it back, explore its
//! generator while it learns, or open a finished run and resume it.
//!
//! The panel owns a [`TrainWorker`]; it sends [`TrainCommand`]s and turns
//! the [`TrainEvent`]s into what the views draw. Training never runs on
//! the UI thread: the panel only keeps curves and textures.

mod alarms;
mod form;
mod monitor;
mod plots;
mod setup;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eframe::egui;

use super::file_dialog::{Ask, Dialogs};
use super::{Action, View};
use crate::train::TrainConfig;
use crate::train::health::Alarm;
use crate::train::history::Curves;
use crate::train_worker::{DatasetSummary, Picture, RunView, TrainCommand, TrainEvent, TrainWorker};

/// How often the training thread's news is shown (twice a second): the
/// curves need no more, and every frame drawn is CPU time training loses
/// (a software-rendered frame costs ~110 ms of CPU; BENCHMARKS.md).
const NEWS_EVERY: Duration = Duration::from_millis(500);
/// Longest time a frame spends taking the training thread's events.
const DRAIN_BUDGET: Duration = Duration::from_millis(8);

/// Where an open run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Read from disk; no session is open (opened, or stopped).
    Viewing,
    /// Stepping.
    Running,
    /// Open, not stepping.
    Paused,
    /// Reached its length; open, and continues once `steps` is raised.
    Finished,
}

/// What a folder picked in a dialog is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pick {
    Dataset,
    Run,
    Out,
}

/// The run on show.
struct Run {
    dir: PathBuf,
    config: TrainConfig,
    curves: Curves,
    grids: Vec<(u64, egui::TextureHandle)>,
    /// The grid shown from the history; `None` follows the newest.
    grid_pick: Option<usize>,
    phase: Phase,
    step: u64,
    images_per_sec: f64,
    active: Vec<Alarm>,
    checkpoint: Option<u64>,
}

/// A dataset being inspected: its spec and whether it was dropped on the window.
struct Inspecting {
    spec: String,
    dropped: bool,
}

/// The Train view's state.
pub struct TrainingPanel {
    worker: TrainWorker,
    ctx: egui::Context,
    cfg: TrainConfig,
    out_dir: String,
    dataset: Option<(DatasetSummary, egui::TextureHandle)>,
    inspecting: Option<Inspecting>,
    run: Option<Run>,
    follow_live: bool,
    form_error: Option<String>,
    dialogs: Dialogs<Pick>,
}

impl TrainingPanel {
    /// Starts the training thread; it wakes `ctx` when it has news, at
    /// most every `NEWS_EVERY`, so a fast run does not repaint per step.
    /// Input still repaints at once: this only paces the curves.
    pub fn new(ctx: &egui::Context) -> std::io::Result<Self> {
        let wake = ctx.clone();
        let worker = crate::train_worker::spawn(Box::new(move || wake.request_repaint_after(NEWS_EVERY)))?;
        Ok(Self {
            worker,
            ctx: ctx.clone(),
            cfg: TrainConfig::default(),
            out_dir: String::new(),
            dataset: None,
            inspecting: None,
            run: None,
            follow_live: false,
            form_error: None,
            dialogs: Dialogs::new(ctx),
        })
    }

    /// The config the form shows (and Start uses).
    pub fn config_mut(&mut self) -> &mut TrainConfig {
        &mut self.cfg
    }

    /// Edits one option of the form as its widget would.
    pub fn edit(&mut self, key: &str, value: &str) -> Result<(), String> {
        self.cfg.set(key, value)
    }

    /// Sets the run directory for Start.
    pub fn set_out_dir(&mut self, dir: &Path) {
        self.out_dir = dir.display().to_string();
    }

    /// The directory Start would train into.
    pub fn out_dir(&self) -> &str {
        &self.out_dir
    }

    /// The dataset chosen and described, if any.
    pub fn dataset(&self) -> Option<&DatasetSummary> {
        self.dataset.as_ref().map(|(d, _)| d)
    }

    /// Where the run on show stands.
    pub fn phase(&self) -> Option<Phase> {
        self.run.as_ref().map(|r| r.phase)
    }

    /// The logged curves of the run on show.
    pub fn curves(&self) -> Option<&Curves> {
        self.run.as_ref().map(|r| &r.curves)
    }

    /// The last step the run on show reached.
    pub fn step(&self) -> u64 {
        self.run.as_ref().map_or(0, |r| r.step)
    }

    /// Sample grids received for the run on show.
    pub fn grid_count(&self) -> usize {
        self.run.as_ref().map_or(0, |r| r.grids.len())
    }

    /// Whether a dataset load is outstanding.
    pub fn is_inspecting(&self) -> bool {
        self.inspecting.is_some()
    }

    /// Asks the thread to load and describe dataset `spec`; the chosen one
    /// stays until it succeeds.
    pub fn choose_dataset(&mut self, spec: String, dropped: bool) {
        let mut probe = TrainConfig { data: spec.clone(), ..self.cfg.clone() };
        if let Some(b) = crate::data::builtins().into_iter().find(|b| spec == format!("builtin:{}", b.name))
            && [28, 32, 64].contains(&b.native_resolution)
        {
            probe.model.resolution = b.native_resolution;
        }
        self.inspecting = Some(Inspecting { spec, dropped });
        self.worker.send(TrainCommand::Inspect(probe));
    }

    /// Reads a run directory and shows its curves and grids.
    pub fn open_run(&mut self, dir: PathBuf) {
        self.worker.send(TrainCommand::Open(dir));
    }

    /// Routes a file dropped on the window: a model opens in the explorer,
    /// a run directory here, anything else is tried as a dataset (and
    /// reported, changing nothing, when it is not one).
    pub fn take_drop(&mut self, path: PathBuf) -> Option<Action> {
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors")) {
            return Some(Action::OpenModel(path.display().to_string()));
        }
        if path.join("config.toml").is_file() {
            self.open_run(path);
            return Some(Action::ShowView(View::Train));
        }
        self.choose_dataset(path.display().to_string(), true);
        None
    }

    fn send(&self, command: TrainCommand) {
        self.worker.send(command);
    }

    /// Takes the training thread's events (within a time budget) and the
    /// dialogs' picks; returns what the app must do.
    pub fn drain(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        while let Some((pick, path)) = self.dialogs.poll() {
            match (pick, path) {
                (_, None) => {}
                (Pick::Dataset, Some(p)) => self.choose_dataset(p.display().to_string(), false),
                (Pick::Run, Some(p)) => self.open_run(p),
                (Pick::Out, Some(p)) => self.set_out_dir(&p),
            }
        }
        let start = Instant::now();
        while start.elapsed() < DRAIN_BUDGET {
            let Some(event) = self.worker.try_recv() else { break };
            actions.extend(self.handle(event));
        }
        if start.elapsed() >= DRAIN_BUDGET {
            self.ctx.request_repaint();
        }
        actions
    }

    fn texture(&self, name: &str, p: &Picture) -> egui::TextureHandle {
        let image = egui::ColorImage::from_rgb([p.width, p.height], &p.rgb);
        self.ctx.load_texture(name, image, egui::TextureOptions::NEAREST)
    }

    fn adopt(&mut self, v: RunView, phase: Phase) {
        let grids = v.grids.iter().map(|(s, p)| (*s, self.texture(&format!("grid_{s}"), p))).collect();
        self.cfg = v.config.clone();
        // Start trains anew, so it must not point at this run's directory.
        self.out_dir = fresh_run_dir(&v.config.data);
        self.run = Some(Run {
            step: v.curves.last_step(),
            dir: v.dir,
            config: v.config,
            curves: v.curves,
            grids,
            grid_pick: None,
            phase,
            images_per_sec: 0.0,
            active: Vec::new(),
            checkpoint: None,
        });
    }

    fn handle(&mut self, event: TrainEvent) -> Option<Action> {
        match event {
            TrainEvent::Dataset { spec, summary } => {
                let ours = self.inspecting.take_if(|i| i.spec == spec)?;
                match summary {
                    Ok(d) => {
                        self.cfg.data = spec;
                        self.cfg.model.resolution = d.resolution;
                        self.cfg.model.channels = d.channels;
                        self.out_dir = fresh_run_dir(&d.name);
                        let tex = self.texture("dataset_preview", &d.preview);
                        self.dataset = Some((d, tex));
                        return ours.dropped.then_some(Action::ShowView(View::Train));
                    }
                    Err(e) if ours.dropped => {
                        return Some(Action::ShowError(format!("{spec} is neither a dataset nor a model: {e}")));
                    }
                    Err(e) => return Some(Action::ShowError(format!("cannot use {spec} as a dataset: {e}"))),
                }
            }
            TrainEvent::Opened(v) => self.adopt(v, Phase::Viewing),
            TrainEvent::Started(v) => self.adopt(v, Phase::Running),
            TrainEvent::LiveModel { source, bytes } => return Some(Action::UseLiveModel { source, bytes }),
            TrainEvent::Error(e) => return Some(Action::ShowError(e)),
            TrainEvent::Grid(step, p) => {
                let tex = self.texture(&format!("grid_{step}"), &p);
                let run = self.run.as_mut()?;
                run.grids.retain(|(s, _)| *s < step);
                run.grids.push((step, tex));
            }
            other => self.run.as_mut()?.apply(other),
        }
        None
    }

    /// Shows the view: the setup column on the left, the run on the right.
    pub fn show(&mut self, ui: &mut egui::Ui) -> Vec<Action> {
        let setup = egui::Panel::left("train_setup")
            .resizable(true)
            .default_size(420.0)
            .show(ui, |ui| egui::ScrollArea::vertical().show(ui, |ui| self.show_setup(ui)).inner);
        egui::CentralPanel::default().show(ui, |ui| self.show_monitor(ui));
        setup.inner
    }

    /// Asks for a folder off the UI thread; the answer comes through `drain`.
    fn pick_folder(&mut self, pick: Pick, title: &str) -> Option<Action> {
        let dialog = rfd::FileDialog::new().set_title(title);
        let shown = self.dialogs.show(pick, Ask::Folder, dialog);
        shown.err().map(|e| Action::ShowError(format!("cannot open a file dialog: {e}")))
    }
}

/// `runs/NAME-SECONDS`, with `-2`, `-3`, ... until no such path exists,
/// where NAME is the last part of the dataset spec `data`.
fn fresh_run_dir(data: &str) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.as_secs());
    let last = data.rsplit([':', '/', '\\']).find(|s| !s.is_empty()).unwrap_or("run");
    let name: String = last.chars().filter(|c| c.is_alphanumeric() || *c == '-').collect();
    let base = format!("runs/{name}-{secs}");
    (1..)
        .map(|k| if k == 1 { base.clone() } else { format!("{base}-{k}") })
        .find(|d| !Path::new(d).exists())
        .unwrap_or(base)
}

impl Run {
    /// Applies a progress event of the open session.
    fn apply(&mut self, event: TrainEvent) {
        match event {
            TrainEvent::Progress(p) => {
                self.step = p.stats.step;
                self.images_per_sec = p.images_per_sec;
                self.config.steps = p.steps;
                self.active = p.active;
                if p.logged {
                    self.curves.push(p.stats);
                }
            }
            TrainEvent::Setting(c) => {
                let _ = self.config.set(&c.key, &c.value);
                self.curves.settings.push(c);
            }
            TrainEvent::Checkpointed(step) => self.checkpoint = Some(step),
            TrainEvent::RolledBack(step) => {
                self.step = step;
                self.active.clear();
                self.curves.points.retain(|p| p.step <= step);
                self.grids.retain(|(s, _)| *s <= step);
                self.checkpoint = Some(step);
            }
            TrainEvent::Paused(paused) => self.phase = if paused { Phase::Paused } else { Phase::Running },
            TrainEvent::Ended { step, finished } => {
                self.step = step;
                self.phase = if finished { Phase::Finished } else { Phase::Viewing };
            }
            _ => {}
        }
    }

    /// Whether a session is open on the training thread.
    fn open(&self) -> bool {
        self.phase != Phase::Viewing
    }
}
