//! The `ganscope` binary: parse the command line, run a headless subcommand
//! or open the app.

use clap::Parser;
use ganscope::cli::Cli;
#[cfg(feature = "gui")]
use ganscope::cli::Command;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("GANSCOPE_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    #[cfg(feature = "gui")]
    if matches!(cli.command, None | Some(Command::Explore { .. })) {
        // SAFETY: no other thread has started yet.
        unsafe { ganscope::device::serial_candle_elementwise() };
    }
    let result = match cli.command {
        #[cfg(feature = "gui")]
        None => ganscope::app::run(None),
        #[cfg(feature = "gui")]
        Some(Command::Explore { model }) => ganscope::app::run(model),
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
