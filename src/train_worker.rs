//! The training thread: drives a [`Session`], the same one `ganscope train`
//! drives, off the UI thread, and talks in plain-data messages like
//! [`crate::worker`] does for the generator.
//!
//! [`TrainCommand`]s go in (start, pause, steer, roll back, ...); between
//! steps the thread drains them, so a command waits at most one step.
//! [`TrainEvent`]s come out: progress every step, the logged metrics, sample
//! grids, alarms and, when the explorer follows the run, the live generator
//! as model-file bytes. This module knows nothing of egui.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::background::{Background, Shutdown};
use crate::data::Dataset;
use crate::device;
use crate::export::grid;
use crate::train::TrainConfig;
use crate::train::health::Alarm;
use crate::train::history::{self, Curves, SettingChange};
use crate::train::run::{self, Session};
use crate::train::trainer::StepStats;

/// Images shown in a dataset's preview.
const PREVIEW_COUNT: usize = 16;
/// Longest gap between two live generators sent to the explorer.
const LIVE_EVERY: Duration = Duration::from_secs(2);

/// What the UI asks of the training thread.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainCommand {
    /// Load `cfg.data` as `cfg`'s model would see it and describe it.
    Inspect(TrainConfig),
    /// Start a new run of `cfg` in `dir`.
    Start {
        /// The full config.
        cfg: TrainConfig,
        /// The run directory (created; refused if it already holds a run).
        dir: PathBuf,
    },
    /// Read a run directory's curves and grids without training.
    Open(PathBuf),
    /// Continue the run in `dir` up to `steps` G steps.
    Resume {
        /// The run directory.
        dir: PathBuf,
        /// The run's new length.
        steps: u64,
    },
    /// Stop stepping; the session stays open.
    Pause,
    /// Step again after a pause (or after the end, once `steps` was raised).
    Continue,
    /// Write a checkpoint and close the session.
    Stop,
    /// Write a checkpoint now.
    SaveCheckpoint,
    /// Go back to the last checkpoint written while no alarm was raised.
    RollBack,
    /// Change a steerable option; recorded with its step in metrics.jsonl.
    Set {
        /// Dotted option name.
        key: String,
        /// TOML value.
        value: String,
    },
    /// Send the live generator to the explorer as training goes (or stop).
    FollowLive(bool),
    /// End the thread.
    Shutdown,
}

/// An RGB picture: a dataset preview or a sample grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Picture {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height * 3` bytes.
    pub rgb: Arc<[u8]>,
}

impl Picture {
    fn from_image(img: &image::RgbImage) -> Self {
        Self { width: img.width() as usize, height: img.height() as usize, rgb: img.as_raw().as_slice().into() }
    }
}

/// A dataset, described before training starts.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSummary {
    /// The dataset's own name.
    pub name: String,
    /// Number of images.
    pub count: usize,
    /// Side in pixels, as the model will see it.
    pub resolution: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Class names (empty when unlabelled).
    pub classes: Vec<String>,
    /// Images per class.
    pub class_counts: Vec<usize>,
    /// Unreadable files skipped.
    pub skipped: usize,
    /// A few images, spread over the dataset.
    pub preview: Picture,
}

/// A run as the panel shows it: where it is, its config and what it logged.
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    /// The run directory.
    pub dir: PathBuf,
    /// The run's config.
    pub config: TrainConfig,
    /// The logged curves so far.
    pub curves: Curves,
    /// The sample grids so far, by step.
    pub grids: Vec<(u64, Picture)>,
}

/// One step's progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// The step's measurements.
    pub stats: StepStats,
    /// Whether they went to metrics.jsonl (and so onto the curves).
    pub logged: bool,
    /// Images per second over the recent steps.
    pub images_per_sec: f64,
    /// The run's length in steps.
    pub steps: u64,
    /// The alarms raised now.
    pub active: Vec<Alarm>,
}

/// What the training thread tells the UI.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainEvent {
    /// The answer to [`TrainCommand::Inspect`] for dataset `spec`.
    Dataset {
        /// The spec inspected.
        spec: String,
        /// Its description, or why it is not a dataset.
        summary: Result<DatasetSummary, String>,
    },
    /// A run directory was read (no session open).
    Opened(RunView),
    /// A session started (new or resumed) and is stepping.
    Started(RunView),
    /// A step was taken.
    Progress(Progress),
    /// A sample grid was written at this step.
    Grid(u64, Picture),
    /// A setting changed.
    Setting(SettingChange),
    /// A checkpoint was written at this step.
    Checkpointed(u64),
    /// The run went back to this step.
    RolledBack(u64),
    /// Stepping paused (true) or continued (false).
    Paused(bool),
    /// The session closed (stopped) or reached its length (finished, still open).
    Ended {
        /// The last step.
        step: u64,
        /// Reached `steps` (the session stays open and can be extended).
        finished: bool,
    },
    /// The live generator, as model-file bytes, for the explorer.
    LiveModel {
        /// Names it in the explorer.
        source: String,
        /// A `.safetensors` model file.
        bytes: Arc<[u8]>,
    },
    /// Something failed; one line.
    Error(String),
}

/// The UI's handle on the training thread. Dropping it stops the run
/// (with a checkpoint) and the thread.
pub type TrainWorker = Background<TrainCommand, TrainEvent>;

impl Shutdown for TrainCommand {
    fn shutdown() -> Self {
        TrainCommand::Shutdown
    }
}

/// Starts the training thread; `wake` is called after every event.
pub fn spawn(wake: Box<dyn Fn() + Send>) -> std::io::Result<TrainWorker> {
    Background::spawn("ganscope-train", move |commands, events| Trainee::new(events, wake).run(&commands))
}

/// What shapes a loaded dataset: spec, resolution, channels, background.
type DataKey = (String, usize, usize, [u8; 3]);

/// The thread's state.
struct Trainee {
    events: Sender<TrainEvent>,
    wake: Box<dyn Fn() + Send>,
    device: candle_core::Device,
    session: Option<Session>,
    stepping: bool,
    follow: bool,
    last_live: Option<Instant>,
    /// The last dataset loaded, reused by Start.
    data: Option<(DataKey, Arc<Dataset>)>,
}

impl Trainee {
    fn new(events: Sender<TrainEvent>, wake: Box<dyn Fn() + Send>) -> Self {
        let device = device::select_for_app().device;
        Self { events, wake, device, session: None, stepping: false, follow: false, last_live: None, data: None }
    }

    fn send(&self, event: TrainEvent) {
        if self.events.send(event).is_ok() {
            (self.wake)();
        }
    }

    /// Blocks for commands while idle; between steps, takes what is queued.
    fn run(mut self, commands: &Receiver<TrainCommand>) {
        loop {
            let next = if self.stepping { commands.try_recv().ok() } else { commands.recv().ok() };
            match next {
                Some(TrainCommand::Shutdown) => break,
                Some(cmd) => {
                    if let Err(e) = self.handle(cmd) {
                        self.send(TrainEvent::Error(format!("{e:#}")));
                    }
                }
                None if self.stepping => {
                    if let Err(e) = self.step() {
                        self.stepping = false;
                        self.send(TrainEvent::Error(format!("{e:#}")));
                        self.send(TrainEvent::Paused(true));
                    }
                }
                None => break,
            }
        }
        if let Some(mut s) = self.session.take() {
            let _ = s.checkpoint();
        }
    }

    fn session(&mut self) -> Result<&mut Session> {
        self.session.as_mut().context("no run is open")
    }

    fn handle(&mut self, cmd: TrainCommand) -> Result<()> {
        match cmd {
            TrainCommand::Inspect(mut cfg) => {
                // A new dataset trains at its own channel count by default
                // (the form keeps whatever the last one had otherwise).
                if let Ok(c) = crate::data::native_channels(&cfg.data) {
                    cfg.model.channels = c;
                }
                let summary = self.dataset(&cfg).map(|d| summarize(&d)).map_err(|e| format!("{e:#}"));
                self.send(TrainEvent::Dataset { spec: cfg.data, summary });
            }
            TrainCommand::Start { cfg, dir } => {
                self.refuse_if_open()?;
                let data = self.dataset(&cfg)?;
                let session = Session::create(cfg, data, &self.device, &dir)?;
                self.open_session(session)?;
            }
            TrainCommand::Open(dir) => {
                self.refuse_if_open()?;
                self.send(TrainEvent::Opened(view(&dir)?));
            }
            TrainCommand::Resume { dir, steps } => {
                self.refuse_if_open()?;
                let mut cfg = run::read_config(&dir)?;
                cfg.set("steps", &steps.to_string()).map_err(anyhow::Error::msg)?;
                let data = self.dataset(&cfg)?;
                let session = Session::resume(cfg, data, &self.device, &dir)?;
                if session.trainer.step_count() >= steps {
                    bail!("{} is already at step {}: raise the steps to continue", dir.display(), steps);
                }
                self.open_session(session)?;
            }
            TrainCommand::Pause | TrainCommand::Continue => {
                let pause = cmd == TrainCommand::Pause;
                let s = self.session()?;
                if !pause && s.trainer.step_count() >= s.trainer.config().steps {
                    bail!("the run has reached its {} steps: raise `steps` to continue", s.trainer.config().steps);
                }
                self.stepping = !pause;
                self.send(TrainEvent::Paused(pause));
            }
            TrainCommand::Stop => {
                let mut s = self.session.take().context("no run is open")?;
                self.stepping = false;
                s.checkpoint()?;
                self.send(TrainEvent::Ended { step: s.trainer.step_count(), finished: false });
            }
            TrainCommand::SaveCheckpoint => {
                let s = self.session()?;
                s.checkpoint()?;
                let step = s.trainer.step_count();
                self.send(TrainEvent::Checkpointed(step));
            }
            TrainCommand::RollBack => {
                let step = self.session()?.roll_back()?;
                self.send(TrainEvent::RolledBack(step));
                self.send_live(true)?;
            }
            TrainCommand::Set { key, value } => {
                let s = self.session()?;
                s.set_option(&key, &value)?;
                let step = s.trainer.step_count();
                self.send(TrainEvent::Setting(SettingChange { step, key, value }));
            }
            TrainCommand::FollowLive(on) => {
                self.follow = on;
                self.send_live(true)?;
            }
            TrainCommand::Shutdown => {}
        }
        Ok(())
    }

    fn refuse_if_open(&self) -> Result<()> {
        match &self.session {
            Some(s) => bail!("a run is open in {}: stop it first", s.dir().display()),
            None => Ok(()),
        }
    }

    fn open_session(&mut self, session: Session) -> Result<()> {
        let v = view(session.dir())?;
        self.session = Some(session);
        self.stepping = true;
        self.send(TrainEvent::Started(v));
        self.send_live(true)
    }

    /// `cfg.data` loaded for `cfg`'s model, reusing the last load when it matches.
    fn dataset(&mut self, cfg: &TrainConfig) -> Result<Arc<Dataset>> {
        let key = (cfg.data.clone(), cfg.model.resolution, cfg.model.channels, cfg.background);
        if let Some((k, d)) = &self.data
            && *k == key
        {
            return Ok(d.clone());
        }
        let data = Arc::new(run::load_data(cfg)?);
        self.data = Some((key, data.clone()));
        Ok(data)
    }

    fn step(&mut self) -> Result<()> {
        let s = self.session()?;
        let adv = s.advance()?;
        let progress = Progress {
            stats: adv.stats.clone(),
            logged: adv.logged,
            images_per_sec: adv.images_per_sec,
            steps: s.trainer.config().steps,
            active: s.trainer.alarms().to_vec(),
        };
        self.send(TrainEvent::Progress(progress));
        if let Some(path) = &adv.grid {
            self.send(TrainEvent::Grid(adv.stats.step, read_picture(path)?));
        }
        if adv.checkpointed {
            self.send(TrainEvent::Checkpointed(adv.stats.step));
        }
        self.send_live(adv.grid.is_some())?;
        if adv.finished {
            self.stepping = false;
            self.send(TrainEvent::Ended { step: adv.stats.step, finished: true });
        }
        Ok(())
    }

    /// Sends the live generator when the explorer follows the run, `now`
    /// or once [`LIVE_EVERY`] has passed since the last one.
    fn send_live(&mut self, now: bool) -> Result<()> {
        let due = now || self.last_live.is_none_or(|t| t.elapsed() >= LIVE_EVERY);
        let Some(s) = self.session.as_ref().filter(|_| self.follow && due) else { return Ok(()) };
        let path = s.dir().join(crate::train::checkpoint::MODEL_FILE);
        let bytes = s.trainer.model_bytes(&path)?;
        let source = format!("{} (live)", s.dir().display());
        self.last_live = Some(Instant::now());
        self.send(TrainEvent::LiveModel { source, bytes: bytes.into() });
        Ok(())
    }
}

/// A run directory as the panel shows it.
fn view(dir: &Path) -> Result<RunView> {
    let record = history::read(dir)?;
    let grids = record.grids.iter().map(|(step, p)| Ok((*step, read_picture(p)?))).collect::<Result<_>>()?;
    Ok(RunView { dir: dir.to_path_buf(), config: record.config, curves: record.curves, grids })
}

fn read_picture(path: &Path) -> Result<Picture> {
    let img = image::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Picture::from_image(&img.to_rgb8()))
}

/// Counts, classes and a preview spread evenly over the dataset.
fn summarize(d: &Dataset) -> DatasetSummary {
    let n = PREVIEW_COUNT.min(d.len());
    let pixels: Vec<f32> = (0..n).flat_map(|i| d.image(i * d.len() / n.max(1)).iter().copied()).collect();
    let tiles = grid::batch_to_rgb(&pixels, d.channels, d.resolution);
    DatasetSummary {
        name: d.name.clone(),
        count: d.len(),
        resolution: d.resolution,
        channels: d.channels,
        classes: d.classes.clone(),
        class_counts: d.class_counts(),
        skipped: d.skipped_count,
        preview: Picture::from_image(&grid::grid(&tiles, 8, 2)),
    }
}
