//! The background thread that owns the compute device and the loaded
//! generator, and talks to the UI in plain-data messages.
//!
//! [`Command`]s go in, [`Event`]s come out. The UI never waits on the model:
//! it sends a command, keeps drawing, and is woken by the `wake` callback
//! when an event is ready. When commands pile up (the user drags faster than
//! the model generates), only the newest [`Generate`] request per
//! [`Target`] is run; the stale ones are dropped unanswered.
//!
//! This module knows nothing of egui or wgpu: the wake-up is a plain
//! callback, and images come back as NCHW `f32` in [-1, 1].

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::background::{Background, Shutdown};
use crate::device;
use crate::gan::Model;

/// What a batch of images is for. The worker keeps at most one queued
/// request per target: a newer one replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// The two images under the probe: `[slerp, lerp]`.
    Probe,
    /// Frames along the anchor path: the slerp row, then the lerp row.
    Strip,
    /// The sample grid (one image per seed).
    Grid,
}

/// A request for images.
#[derive(Debug, Clone, PartialEq)]
pub struct Generate {
    /// Echoed in the answer so the UI can tell the newest result.
    pub request_id: u64,
    /// What the images are for.
    pub target: Target,
    /// `count` rows of `z_dim` floats.
    pub latents: Vec<f32>,
    /// Number of images.
    pub count: usize,
    /// Class of a conditional model (ignored by unconditional ones).
    pub class: Option<u32>,
    /// Keep G's dropout on at sampling time (GANHACKS tip 17), with this
    /// seed for the masks, so the same request gives the same images.
    pub dropout_seed: Option<u64>,
}

/// What the UI asks of the worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Load a model: `None` is the embedded default, else `builtin:NAME` or a
    /// path to a `.safetensors` file or run directory. On failure an
    /// [`Event::Error`] is sent and the current model stays.
    LoadModel(Option<String>),
    /// Load a model file from memory (the training panel's live generator),
    /// named `source`; a newer one replaces a queued one.
    LoadModelBytes {
        /// Names the model in the UI and in errors.
        source: String,
        /// The `.safetensors` model file.
        bytes: Arc<[u8]>,
    },
    /// Generate images with the current model.
    Generate(Generate),
    /// Stop the thread.
    Shutdown,
}

/// A loaded model, described in plain data for the UI.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Short name: the built-in name or the file name.
    pub name: String,
    /// The spec it was loaded from (`builtin:emoji`, a path).
    pub source: String,
    /// Image side in pixels.
    pub resolution: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Latent dimension.
    pub z_dim: usize,
    /// Dropout probability in G; > 0 means sampling-time dropout is offered.
    pub dropout: f64,
    /// Class names of a conditional model (empty when unconditional).
    pub classes: Vec<String>,
    /// First 16 hex digits of the file's SHA-256.
    pub hash: String,
    /// Number of generator parameters.
    pub parameters: usize,
    /// One line on where it came from (dataset, steps, EMA).
    pub provenance: String,
    /// The device it runs on.
    pub device: String,
}

impl ModelInfo {
    /// Whether G has dropout layers (tip 17).
    pub fn has_dropout(&self) -> bool {
        self.dropout > 0.0
    }

    /// Whether the model takes a class.
    pub fn conditional(&self) -> bool {
        !self.classes.is_empty()
    }
}

/// Generated images, answering one [`Generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Images {
    /// The request this answers.
    pub request_id: u64,
    /// What they are for.
    pub target: Target,
    /// Image width in pixels.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Channels per pixel (1 or 3).
    pub channels: usize,
    /// Number of images.
    pub count: usize,
    /// NCHW floats in [-1, 1].
    pub pixels: Arc<[f32]>,
    /// Time spent in the generator.
    pub generate_time: Duration,
    /// Requests dropped as stale since the worker started.
    pub stale_dropped: u64,
}

/// What the worker tells the UI.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A model is loaded and now current.
    ModelLoaded(ModelInfo),
    /// Images for a request.
    Images(Images),
    /// Something failed; for a failed request, which one.
    Error {
        /// The failed request, if the error answers one.
        request: Option<(Target, u64)>,
        /// One line, naming the file and the problem where there is one.
        message: String,
    },
}

/// The app's handle on the generator thread. Dropping it stops the thread.
pub type Worker = Background<Command, Event>;

impl Shutdown for Command {
    fn shutdown() -> Self {
        Command::Shutdown
    }
}

/// Starts the generator thread. `wake` is called after every event is sent
/// (the app passes `egui::Context::request_repaint`).
pub fn spawn(wake: Box<dyn Fn() + Send>) -> std::io::Result<Worker> {
    Background::spawn("ganscope-worker", move |commands, events| run(&commands, &events, wake.as_ref()))
}

/// The worker's state on its own thread.
struct State {
    device: candle_core::Device,
    device_name: String,
    model: Option<Model>,
    stale_dropped: u64,
}

/// Queues `cmd`, replacing a queued `Generate` for the same target.
fn enqueue(queue: &mut VecDeque<Command>, cmd: Command, dropped: &mut u64) {
    match &cmd {
        Command::Generate(g) => {
            let before = queue.len();
            queue.retain(|c| !matches!(c, Command::Generate(old) if old.target == g.target));
            *dropped += (before - queue.len()) as u64;
        }
        Command::LoadModelBytes { .. } => queue.retain(|c| !matches!(c, Command::LoadModelBytes { .. })),
        _ => {}
    }
    queue.push_back(cmd);
}

/// Which queued command runs next: the probe request jumps ahead of other
/// image requests (it is what the user is dragging), but never ahead of a
/// model load or shutdown; otherwise the oldest.
fn next_index(queue: &VecDeque<Command>) -> usize {
    for (i, c) in queue.iter().enumerate() {
        match c {
            Command::Generate(g) if g.target == Target::Probe => return i,
            Command::Generate(_) => {}
            Command::LoadModel(_) | Command::LoadModelBytes { .. } | Command::Shutdown => return 0,
        }
    }
    0
}

/// The thread's loop: block for a command, drain whatever else is queued
/// (dropping stale requests), run the oldest survivor, repeat.
fn run(commands: &Receiver<Command>, events: &Sender<Event>, wake: &(dyn Fn() + Send)) {
    let chosen = device::select_for_app();
    let mut state = State { device: chosen.device, device_name: chosen.description, model: None, stale_dropped: 0 };
    let mut queue = VecDeque::new();
    loop {
        if queue.is_empty() {
            match commands.recv() {
                Ok(c) => enqueue(&mut queue, c, &mut state.stale_dropped),
                Err(_) => return,
            }
        }
        while let Ok(c) = commands.try_recv() {
            enqueue(&mut queue, c, &mut state.stale_dropped);
        }
        let Some(cmd) = queue.remove(next_index(&queue)) else {
            continue;
        };
        let event = match cmd {
            Command::Shutdown => return,
            Command::LoadModel(spec) => load(&mut state, spec.as_deref()),
            Command::LoadModelBytes { source, bytes } => {
                let model = crate::gan::model_file::load_bytes(&bytes, &source, &state.device);
                adopt(&mut state, model.map_err(anyhow::Error::from), &source)
            }
            Command::Generate(g) => generate(&state, g),
        };
        if events.send(event).is_err() {
            return;
        }
        wake();
    }
}

/// Loads a model; the current one stays on failure.
fn load(state: &mut State, spec: Option<&str>) -> Event {
    let model = crate::cli::load_model(spec, &state.device);
    adopt(state, model, spec.unwrap_or("builtin:emoji"))
}

/// Makes a loaded model current, or reports why it could not be loaded.
fn adopt(state: &mut State, model: anyhow::Result<Model>, source: &str) -> Event {
    match model {
        Ok(model) => {
            let info = describe(&model, source, &state.device_name);
            state.model = Some(model);
            Event::ModelLoaded(info)
        }
        Err(e) => Event::Error { request: None, message: format!("cannot open model: {e:#}") },
    }
}

/// Plain-data description of a model.
fn describe(model: &Model, source: &str, device: &str) -> ModelInfo {
    let source = source.to_string();
    let name = match source.strip_prefix("builtin:") {
        Some(n) => n.to_string(),
        None => {
            // A run directory, or its `model.safetensors`, is named after the run.
            let p = std::path::Path::new(&source);
            let stem = if p.is_dir() { p.file_name() } else { p.file_stem() };
            let stem = match stem {
                Some(s) if s == "model" => p.parent().and_then(|d| d.file_name()).or(Some(s)),
                other => other,
            };
            stem.map_or_else(|| source.clone(), |s| s.to_string_lossy().into_owned())
        }
    };
    let cfg = &model.config;
    let prov = &model.provenance;
    let classes = if cfg.num_classes == 0 {
        Vec::new()
    } else {
        (0..cfg.num_classes).map(|i| prov.classes.get(i).cloned().unwrap_or_else(|| format!("class {i}"))).collect()
    };
    let mut provenance = Vec::new();
    if !prov.dataset.is_empty() {
        provenance.push(format!("trained on {}", prov.dataset));
    }
    if prov.steps > 0 {
        provenance.push(format!("{} steps", prov.steps));
    }
    if prov.ema {
        provenance.push("EMA weights".to_string());
    }
    if !prov.ganscope_version.is_empty() {
        provenance.push(format!("ganscope {}", prov.ganscope_version));
    }
    ModelInfo {
        name,
        source,
        resolution: cfg.resolution,
        channels: cfg.channels,
        z_dim: cfg.z_dim,
        dropout: cfg.g_dropout,
        classes,
        hash: model.hash.clone(),
        parameters: model.parameters,
        provenance: if provenance.is_empty() { "no provenance recorded".into() } else { provenance.join(", ") },
        device: device.to_string(),
    }
}

/// Runs one request.
fn generate(state: &State, g: Generate) -> Event {
    let fail = |message: String| Event::Error { request: Some((g.target, g.request_id)), message };
    let Some(model) = &state.model else {
        return fail("no model is loaded".into());
    };
    let dim = model.config.z_dim;
    if g.latents.len() != g.count * dim {
        return fail(format!("{} latent floats for {} images of dimension {dim}", g.latents.len(), g.count));
    }
    let mut rng = g.dropout_seed.map(ChaCha8Rng::seed_from_u64);
    let start = Instant::now();
    match model.generate(&g.latents, g.class, rng.as_mut()) {
        Ok(pixels) => Event::Images(Images {
            request_id: g.request_id,
            target: g.target,
            width: model.config.resolution,
            height: model.config.resolution,
            channels: model.config.channels,
            count: g.count,
            pixels: pixels.into(),
            generate_time: start.elapsed(),
            stale_dropped: state.stale_dropped,
        }),
        Err(e) => fail(format!("generation failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen_cmd(id: u64, target: Target) -> Command {
        Command::Generate(Generate {
            request_id: id,
            target,
            latents: Vec::new(),
            count: 0,
            class: None,
            dropout_seed: None,
        })
    }

    #[test]
    fn newest_request_per_target_wins() {
        let mut q = VecDeque::new();
        let mut dropped = 0;
        for (id, t) in [(1, Target::Probe), (2, Target::Grid), (3, Target::Probe), (4, Target::Probe)] {
            enqueue(&mut q, gen_cmd(id, t), &mut dropped);
        }
        let ids: Vec<u64> =
            q.iter().filter_map(|c| if let Command::Generate(g) = c { Some(g.request_id) } else { None }).collect();
        assert_eq!(ids, vec![2, 4]);
        assert_eq!(dropped, 2);
        assert_eq!(next_index(&q), 1, "the probe goes first");
        q.push_front(Command::LoadModel(None));
        assert_eq!(next_index(&q), 0, "but not ahead of a model load");
    }

    #[test]
    fn loads_default_model_and_generates() {
        let worker = spawn(Box::new(|| {})).expect("spawn");
        // The embedded default, or another model while it is being replaced.
        worker.send(Command::LoadModel(std::env::var("GANSCOPE_TEST_MODEL").ok().filter(|s| !s.is_empty())));
        let Some(Event::ModelLoaded(info)) = worker.recv_timeout(Duration::from_secs(60)) else {
            panic!("no model");
        };
        let z = crate::latent::from_seed(1, info.z_dim, crate::latent::Prior::Sphere);
        worker.send(Command::Generate(Generate {
            request_id: 7,
            target: Target::Probe,
            latents: z,
            count: 1,
            class: None,
            dropout_seed: None,
        }));
        let Some(Event::Images(img)) = worker.recv_timeout(Duration::from_secs(60)) else {
            panic!("no images");
        };
        assert_eq!(img.request_id, 7);
        assert_eq!(img.pixels.len(), info.channels * info.resolution * info.resolution);
        worker.send(Command::LoadModel(Some("/nonexistent/model.safetensors".into())));
        let Some(Event::Error { message, .. }) = worker.recv_timeout(Duration::from_secs(60)) else {
            panic!("no error");
        };
        assert!(message.contains("nonexistent"), "{message}");
    }
}
