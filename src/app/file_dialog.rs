//! Native file dialogs off the UI thread. A dialog blocks its caller until
//! the user answers, so each runs on a thread of its own; the answer is
//! collected on a later frame, tagged with what it was asked for.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};

use eframe::egui;

/// What kind of path a dialog asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// An existing file.
    Open,
    /// A file to write.
    Save,
    /// A folder.
    Folder,
}

/// One dialog at a time, its answer tagged with a `K`.
pub struct Dialogs<K> {
    tx: Sender<(K, Option<PathBuf>)>,
    rx: Receiver<(K, Option<PathBuf>)>,
    ctx: egui::Context,
    open: bool,
}

impl<K: Send + 'static> Dialogs<K> {
    /// No dialog up; `ctx` is woken when one closes.
    pub fn new(ctx: &egui::Context) -> Self {
        let (tx, rx) = mpsc::channel();
        Self { tx, rx, ctx: ctx.clone(), open: false }
    }

    /// Whether a dialog is up.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Shows `dialog` asking for `ask`; [`Dialogs::poll`] returns the answer
    /// tagged `kind`. Does nothing while another dialog is up.
    pub fn show(&mut self, kind: K, ask: Ask, dialog: rfd::FileDialog) -> std::io::Result<()> {
        if self.open {
            return Ok(());
        }
        let tx = self.tx.clone();
        let ctx = self.ctx.clone();
        std::thread::Builder::new().name("ganscope-file-dialog".into()).spawn(move || {
            let path = match ask {
                Ask::Open => dialog.pick_file(),
                Ask::Save => dialog.save_file(),
                Ask::Folder => dialog.pick_folder(),
            };
            let _ = tx.send((kind, path));
            ctx.request_repaint();
        })?;
        self.open = true;
        Ok(())
    }

    /// The answer of a dialog that closed since the last call: what it was
    /// for, and the path (`None` when cancelled).
    pub fn poll(&mut self) -> Option<(K, Option<PathBuf>)> {
        let answer = self.rx.try_recv().ok()?;
        self.open = false;
        Some(answer)
    }
}
