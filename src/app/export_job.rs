//! One export running on a thread of its own, through the same
//! [`export::export`] pipeline as `ganscope interpolate`.
//!
//! The thread opens its own copy of the model (from its spec, or from the
//! bytes of a training run's live generator) on the device the worker
//! picks, so the explorer keeps generating while frames are rendered. It
//! checks the copy's hash against the model on screen: an export never
//! silently renders another model than the one the user looked at.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};

use anyhow::bail;

use crate::device;
use crate::export::{self, ExportError, FrameSpec, Progress, Summary};

/// Where the export thread gets the model from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A spec as `ganscope --model` takes it (`builtin:NAME`, a file, a run directory).
    Spec(String),
    /// A model file in memory (a training run's live generator), named `source`.
    Bytes {
        /// Names the model in errors.
        source: String,
        /// The `.safetensors` bytes.
        bytes: Arc<[u8]>,
    },
}

/// What an export asks for.
#[derive(Debug, Clone)]
pub struct Request {
    /// The model to render with.
    pub model: ModelSource,
    /// The hash of the model on screen; a copy that differs is an error.
    pub hash: String,
    /// The frames.
    pub spec: FrameSpec,
    /// Frames per second.
    pub fps: f64,
    /// The target file or folder.
    pub out: PathBuf,
}

/// How an export ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Everything was written and renamed into place.
    Written(Summary),
    /// Cancelled: nothing is at the target.
    Cancelled,
    /// Failed, in one line naming the file and the problem; nothing is at the target.
    Failed(String),
}

enum Message {
    Progress(Progress),
    Done(Outcome),
}

/// A running export.
pub struct ExportJob {
    out: PathBuf,
    cancel: Arc<AtomicBool>,
    messages: Receiver<Message>,
    progress: Option<Progress>,
}

impl ExportJob {
    /// Starts the thread; `wake` is called after each progress step and at the end.
    pub fn start(request: Request, wake: impl Fn() + Send + 'static) -> std::io::Result<ExportJob> {
        let (tx, messages) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let out = request.out.clone();
        let flag = Arc::clone(&cancel);
        std::thread::Builder::new().name("ganscope-export".into()).spawn(move || {
            let outcome = match run(&request, &flag, |p| {
                let _ = tx.send(Message::Progress(p));
                wake();
            }) {
                Ok(summary) => Outcome::Written(summary),
                Err(e) if matches!(e.downcast_ref(), Some(ExportError::Cancelled)) => Outcome::Cancelled,
                Err(e) => Outcome::Failed(format!("{e:#}")),
            };
            let _ = tx.send(Message::Done(outcome));
            wake();
        })?;
        Ok(ExportJob { out, cancel, messages, progress: None })
    }

    /// Asks the thread to stop after the batch in hand.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Whether cancel was asked for.
    pub fn cancelling(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The target path.
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// Frames done so far; `None` while the model is being opened.
    pub fn progress(&self) -> Option<Progress> {
        self.progress
    }

    /// Takes the thread's news; returns the outcome once it has ended.
    pub fn poll(&mut self) -> Option<Outcome> {
        while let Ok(m) = self.messages.try_recv() {
            match m {
                Message::Progress(p) => self.progress = Some(p),
                Message::Done(outcome) => return Some(outcome),
            }
        }
        None
    }
}

impl Drop for ExportJob {
    /// A job dropped unfinished (the app closing) stops; its staging file
    /// is removed by the pipeline.
    fn drop(&mut self) {
        self.cancel();
    }
}

/// Opens the model and runs the pipeline.
fn run(r: &Request, cancel: &AtomicBool, progress: impl FnMut(Progress)) -> anyhow::Result<Summary> {
    let chosen = device::select_for_app();
    let (model, name) = match &r.model {
        ModelSource::Spec(spec) => (crate::cli::load_model(Some(spec), &chosen.device)?, spec.as_str()),
        ModelSource::Bytes { source, bytes } => {
            (crate::gan::model_file::load_bytes(bytes, source, &chosen.device)?, source.as_str())
        }
    };
    if model.hash != r.hash {
        bail!(
            "{name}: the file changed since it was opened (hash {} now, {} on screen): open it again",
            model.hash,
            r.hash
        );
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(ExportError::Cancelled.into());
    }
    Ok(export::export(&model, &r.spec, r.fps, &r.out, cancel, progress)?)
}
