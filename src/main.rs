//! The `ganscope` binary: parse the command line, run a headless subcommand
//! or open the app.

use clap::Parser;
use ganscope::cli::Cli;
#[cfg(feature = "gui")]
use ganscope::cli::Command;

/// mimalloc, told never to hand freed memory back to the OS.
///
/// Why: a training step frees and reallocates hundreds of tensors of up to
/// 64 MB. glibc maps each one above 32 MB fresh and unmaps it on free, so
/// every step paid page faults, zeroing and, with two threads, TLB-shootdown
/// interrupts: a quarter of a two-thread step was kernel time, and training
/// ran 20-40% slower (BENCHMARKS.md). Keeping freed pages costs only the
/// peak of one step, which training reaches anyway.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in `mimalloc.h` (v2 and v3); the Rust bindings
/// lack the constant.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> std::process::ExitCode {
    // SAFETY: sets a plain integer option; -1 means "never purge".
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("GANSCOPE_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // SAFETY: no other thread has started yet.
    unsafe { ganscope::device::tune_candle_pool() };
    let result = match cli.command {
        #[cfg(feature = "gui")]
        None => ganscope::app::run(None),
        #[cfg(feature = "gui")]
        Some(Command::Explore { model, device }) => {
            ganscope::device::set_app_device(device);
            ganscope::app::run(model)
        }
        #[cfg(not(feature = "gui"))]
        None => Err(anyhow::anyhow!("this build has no GUI; see `ganscope --help` for the headless commands")),
        Some(cmd) => ganscope::cli::run(cmd),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
