//! The command line and what operators run: `run`, `check`, `reload`, `diagnose`, `status`,
//! `version`, `help`.
//!
//! `src/main.rs` only calls [`main`]. Exit codes: 0 success, 1 the configuration or the
//! gateway failed (with every reason printed) or a `diagnose` check failed, 2 the command
//! line was wrong.

mod check;
mod cli;
// Shell: probes the Edge, partners, DNS and local ports with real sockets and threads, timed.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod diagnose;
pub mod logging;
pub mod man;
mod reload;
mod run;
// Shell: asks the running gateway over its control socket.
#[allow(clippy::disallowed_types)]
pub mod status;

pub use cli::{Command, DEFAULT_CONFIG};

/// Exit status for a configuration or runtime failure.
pub const EXIT_FAILURE: i32 = 1;
/// Exit status for a command line that could not be understood.
pub const EXIT_USAGE: i32 = 2;

/// Runs the command named by `args` (the whole argv) and returns the process exit status.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let command = match cli::parse(args) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("xsgw: {message}");
            eprintln!("Try `xsgw help`.");
            return EXIT_USAGE;
        }
    };
    match command {
        Command::Help => {
            print!("{}", cli::USAGE);
            0
        }
        Command::Version => {
            println!("xsgw {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Command::Check { config } => check::check(&config),
        Command::Diagnose(options) => diagnose::diagnose(&options),
        Command::Status { config, json } => status::status(&config, json),
        Command::Run { config, pidfile } => run::run(&config, pidfile.as_deref()),
        Command::Reload { config, pidfile } => reload::reload(&config, &pidfile),
    }
}
