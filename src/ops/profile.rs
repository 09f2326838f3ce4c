//! Where a training step's time goes, op by op (`ganscope bench --ops`).
//!
//! While recording is on, each fast CPU op adds its wall time to a row
//! named after the op and its arguments' shapes. What no row holds
//! (candle's own ops, among them the zeroing and adding of every gradient
//! in `backward`, the losses and the bookkeeping between ops) is the
//! step's time minus their sum, and the bench prints it as such. The ops
//! do not nest: a backward is several ops, each recorded on its own.
//!
//! Why not `perf`: a sampling profile says which kernel runs, not which
//! layer it runs for, and on two threads the helper's samples start at a
//! rayon job with no op above them. Off, recording costs each op one
//! relaxed atomic load.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_core::Layout;

static ON: AtomicBool = AtomicBool::new(false);

static ROWS: Mutex<Vec<OpTime>> = Mutex::new(Vec::new());

/// One op and argument shapes: its calls and their summed wall time.
#[derive(Debug, Clone, PartialEq)]
pub struct OpTime {
    /// The op's name and its arguments' shapes, e.g.
    /// `ganscope-conv2d [64, 3, 32, 32] [64, 3, 4, 4]`.
    pub op: String,
    pub calls: u64,
    pub total: Duration,
}

/// Clears the rows and starts recording, for the whole process.
pub fn start() {
    rows().clear();
    ON.store(true, Ordering::Relaxed);
}

/// Stops recording; the rows, longest first.
pub fn stop() -> Vec<OpTime> {
    ON.store(false, Ordering::Relaxed);
    let mut rows = std::mem::take(&mut *rows());
    rows.sort_by_key(|r| std::cmp::Reverse(r.total));
    rows
}

fn rows() -> std::sync::MutexGuard<'static, Vec<OpTime>> {
    // A panic while the lock was held left whole rows: keep them.
    ROWS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Times an op from its creation to its drop, under the row of its name
/// and its arguments' shapes, when recording is on.
pub(super) struct Timer(Option<(Instant, String)>);

impl Timer {
    pub(super) fn start(op: &str, args: &[&Layout]) -> Self {
        Self(ON.load(Ordering::Relaxed).then(|| (Instant::now(), row(op, args))))
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let Some((since, op)) = self.0.take() else { return };
        let took = since.elapsed();
        let mut rows = rows();
        match rows.iter_mut().find(|r| r.op == op) {
            Some(r) => {
                r.calls += 1;
                r.total += took;
            }
            None => rows.push(OpTime { op, calls: 1, total: took }),
        }
    }
}

/// The row of `op` over arguments laid out as `args`.
fn row(op: &str, args: &[&Layout]) -> String {
    args.iter().fold(op.to_string(), |s, l| format!("{s} {:?}", l.dims()))
}
