//! A thread that takes commands and answers with events over channels, and
//! is stopped and joined when its handle drops: what the generator thread
//! ([`crate::worker`]) and the training thread ([`crate::train_worker`])
//! have in common.

use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

/// A command type with a command that ends the thread.
pub trait Shutdown {
    /// The command the handle sends when it drops.
    fn shutdown() -> Self;
}

/// The owning handle of a background thread.
pub struct Background<C: Shutdown, E> {
    commands: Sender<C>,
    events: Receiver<E>,
    thread: Option<JoinHandle<()>>,
}

impl<C: Shutdown + Send + 'static, E: Send + 'static> Background<C, E> {
    /// Runs `body` on a thread called `name`, with the commands to take and
    /// the sender for its events.
    pub fn spawn(name: &str, body: impl FnOnce(Receiver<C>, Sender<E>) + Send + 'static) -> std::io::Result<Self> {
        let (commands, command_rx) = mpsc::channel();
        let (event_tx, events) = mpsc::channel();
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || body(command_rx, event_tx))?;
        Ok(Self { commands, events, thread: Some(thread) })
    }

    /// Queues a command. Returns false when the thread is gone.
    pub fn send(&self, command: C) -> bool {
        self.commands.send(command).is_ok()
    }

    /// The next event, if one is ready.
    pub fn try_recv(&self) -> Option<E> {
        self.events.try_recv().ok()
    }

    /// The next event, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<E> {
        self.events.recv_timeout(timeout).ok()
    }
}

impl<C: Shutdown, E> Drop for Background<C, E> {
    fn drop(&mut self) {
        let _ = self.commands.send(C::shutdown());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
