//! Where CPU work runs: on the rayon pool, and for a job made of many
//! short parallel ops (one image through a generator), with the pool's
//! other threads kept spinning between them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_core::Device;

/// The longest a thread spins for [`on_cpu_pool_awake`] without finding
/// work: several times one 64 px image on two threads (about 2 ms here),
/// and longer than the serial stretches between a training step's ops.
const SPIN_LIMIT: Duration = Duration::from_millis(10);

/// Runs `f` on a rayon worker when `device` is the CPU (inline when this
/// thread already is one), else on this thread.
///
/// Why: each parallel op called from outside the pool hands its work to
/// the pool and puts the caller to sleep until it is done. A training step
/// makes hundreds, and waking the pool's threads each time (a futex, and an
/// interrupt to the sleeping core) showed as 7-15% of a one-thread step in
/// `perf`. On a worker, a one-thread pool runs everything inline and more
/// threads steal the work: 32 px training steps ran 1.2-1.4x faster on one
/// thread, 1.06-1.11x on two. Other devices keep the calling thread, where
/// their context is bound.
pub fn on_cpu_pool<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    if device.is_cpu() { rayon::scope(|_| f()) } else { f() }
}

/// Runs `f`, a job of many short parallel ops, on a rayon worker while the
/// pool's other threads spin, taking its ops' work as it comes, until it
/// returns (or finds none for `SPIN_LIMIT`, 10 ms): [`on_cpu_pool`] with
/// helpers.
/// On another device `f` runs on this thread.
///
/// Why: an idle rayon worker soon goes to sleep, and between two ops of
/// one image there is time enough, so each op then woke it again: in a
/// two-thread profile of one 32 px image, 27% of the samples were the
/// kernel's scheduler, and the image took as long as on one thread.
/// PyTorch's OpenMP threads spin between ops. Spinning, one image on two
/// threads (alternating runs of 7 x 100 images, the fastest): 32 px pixel
/// shuffle 0.43-0.48 → 0.34-0.35 ms, nearest-conv 0.25-0.32 → 0.19-0.23,
/// 28 px transposed conv 0.14-0.20 → 0.13-0.15.
///
/// The limit: a spinner waits inside whatever it runs, so two such jobs
/// started from different threads could each sit under a spinner of the
/// other's, waiting for it to end.
pub fn on_cpu_pool_awake<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    if !device.is_cpu() {
        return f();
    }
    let threads = rayon::current_num_threads();
    on_cpu_pool(device, || {
        let done = Done(Arc::new(AtomicBool::new(false)));
        let owner = rayon::current_thread_index();
        for _ in 1..threads {
            let done = Arc::clone(&done.0);
            rayon::spawn(move || spin(&done, owner));
        }
        f()
    })
}

/// Runs `f` on this thread, as the one worker of a rayon pool of its own
/// (made at the first call, kept for the thread's life) when it is no
/// worker yet and `device` is the CPU: for callers whose rayon pool has
/// one thread, where no op can run in parallel anyway.
///
/// Why: on a non-worker thread every parallel op of more than one chunk
/// hands its work to the pool and sleeps until the worker is done, even
/// when that worker is the pool's only thread. One 64 px image on one
/// thread spent ~0.5 ms of its 2.4-4.4 ms so (a pixel shuffle of 65K values
/// took 0.20 ms against 0.03 on a worker, `bench --ops`); handing the
/// whole image to the pool once instead cost ~0.1 ms at 32 px, more than
/// the handoffs it saved there. As a worker of its own pool, this thread
/// runs every op inline. The thread stays that pool's worker, so later
/// parallel work started on it (a batch through [`on_cpu_pool`]) runs
/// there too: on one thread, as on the pool it stands in for. rayon leaks
/// such a pool's registry: one per thread that generates, a few KiB.
pub fn on_this_thread<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    thread_local! {
        static OWN: Option<rayon::ThreadPool> =
            rayon::ThreadPoolBuilder::new().num_threads(1).use_current_thread().build().ok();
    }
    if !device.is_cpu() || rayon::current_thread_index().is_some() {
        return f();
    }
    OWN.with(|pool| match pool {
        Some(pool) => pool.install(f),
        None => f(),
    })
}

/// Raises its flag when dropped, `f` returned or unwinding.
struct Done(Arc<AtomicBool>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs the pool's pending work until `done` (or [`SPIN_LIMIT`] without
/// any); at once on `owner`, the worker running the job, which meets its
/// own spinner when it waits for work and would otherwise wait for itself.
fn spin(done: &AtomicBool, owner: Option<usize>) {
    if rayon::current_thread_index() == owner {
        return;
    }
    let mut worked = Instant::now();
    while !done.load(Ordering::Acquire) && worked.elapsed() < SPIN_LIMIT {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            worked = Instant::now();
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use candle_core::Device;
    use rayon::prelude::*;

    use super::{on_cpu_pool, on_cpu_pool_awake, on_this_thread};

    #[test]
    fn cpu_work_runs_on_a_rayon_worker() {
        assert_eq!(rayon::current_thread_index(), None, "the test thread is not a worker");
        assert!(on_cpu_pool(&Device::Cpu, rayon::current_thread_index).is_some());
        // Nested calls stay on the worker they started on.
        let (outer, inner) = on_cpu_pool(&Device::Cpu, || {
            (rayon::current_thread_index(), on_cpu_pool(&Device::Cpu, rayon::current_thread_index))
        });
        assert_eq!(outer, inner);
    }

    /// A thread that is no worker runs a parallel op itself, every item of
    /// it, as the one worker of its own pool; and again on a second call.
    #[test]
    fn work_on_this_thread_stays_on_it() {
        std::thread::spawn(|| {
            let me = std::thread::current().id();
            let (index, ran_on) = on_this_thread(&Device::Cpu, || {
                let ids = (0..10_000).into_par_iter().with_min_len(64).map(|_| std::thread::current().id());
                (rayon::current_thread_index(), ids.collect::<Vec<_>>())
            });
            assert_eq!(index, Some(0));
            assert!(ran_on.iter().all(|&id| id == me), "items ran on other threads");
            assert_eq!(on_this_thread(&Device::Cpu, || work(1000)), 1000 * 999 / 2);
        })
        .join()
        .expect("the thread panicked");
    }

    /// Sums 0..n in parallel, as an op would.
    fn work(n: usize) -> usize {
        (0..n).into_par_iter().with_min_len(64).sum()
    }

    /// Two jobs at once, each with its spinner, on a pool of two: each
    /// worker may meet the other's spinner while it waits for work.
    #[test]
    fn awake_jobs_from_two_threads_at_once_all_finish() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            for _ in 0..2 {
                let (tx, pool) = (tx.clone(), &pool);
                s.spawn(move || {
                    for n in 1000..1200 {
                        let sum = pool.install(|| on_cpu_pool_awake(&Device::Cpu, || work(n) + work(n)));
                        tx.send(sum == n * (n - 1)).unwrap();
                    }
                });
            }
            for _ in 0..400 {
                let right = rx.recv_timeout(Duration::from_secs(60)).expect("an awake job never finished");
                assert!(right, "an awake job computed a wrong sum");
            }
        });
    }
}
