//! `xsgw run`: check the configuration, start the gateway, turn signals into lifecycle
//! events, keep the pidfile, exit 0 after an orderly shutdown.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::{self, ConfigError};
use crate::gateway::{state, threads, Gateway, RouterEvent};

use super::{logging, EXIT_FAILURE};

pub fn run(path: &Path, pidfile: Option<&Path>) -> i32 {
    let (config, credentials, report) = match config::check_file(path) {
        Ok(checked) => checked,
        Err(ConfigError::Invalid(report)) => {
            logging::init(log::LevelFilter::Info);
            for line in report.lines() {
                log::error!("{line}");
            }
            log::error!(
                "not starting: fix the configuration (xsgw check -c {})",
                path.display()
            );
            return EXIT_FAILURE;
        }
        Err(other) => {
            logging::init(log::LevelFilter::Info);
            log::error!("not starting: {other}");
            return EXIT_FAILURE;
        }
    };
    logging::init(config.log.level);
    threads::install_panic_hook();
    for warning in report.lines() {
        log::warn!("{warning}");
    }
    let _pidfile = match pidfile.map(Pidfile::create).transpose() {
        Ok(p) => p,
        Err(message) => {
            log::error!("not starting: {message}");
            return EXIT_FAILURE;
        }
    };
    let mut signals = match Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            log::error!("not starting: cannot install signal handlers: {e}");
            return EXIT_FAILURE;
        }
    };
    let gateway = match Gateway::start(Arc::new(config), credentials) {
        Ok(g) => g,
        Err(e) => {
            log::error!("not starting: {e}");
            return EXIT_FAILURE;
        }
    };
    let events = gateway.events();
    let signal_handle = signals.handle();
    let signal_thread =
        threads::spawn_service("signals".into(), threads::CONNECTION_STACK, move || {
            for signal in signals.forever() {
                let event = match signal {
                    SIGHUP => RouterEvent::Reload,
                    _ => {
                        let name = if signal == SIGINT {
                            "SIGINT"
                        } else {
                            "SIGTERM"
                        };
                        log::info!("{name} received: stopping");
                        RouterEvent::Shutdown
                    }
                };
                if events.send(event).is_err() {
                    break;
                }
            }
        });
    let clean = gateway.wait();
    signal_handle.close();
    if let Ok(t) = signal_thread {
        let _ = t.join();
    }
    if clean {
        log::info!("stopped");
        0
    } else {
        log::error!("stopped after a thread failed (see above)");
        EXIT_FAILURE
    }
}

/// The pidfile: refused when another live xsgw holds it, removed on drop.
struct Pidfile(PathBuf);

impl Pidfile {
    fn create(path: &Path) -> Result<Pidfile, String> {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse::<u32>() {
                if pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists() {
                    return Err(format!(
                        "pidfile {} names running process {pid}; is xsgw already running?",
                        path.display()
                    ));
                }
            }
        }
        let contents = format!("{}\n", std::process::id());
        state::write_atomically(path, contents.as_bytes(), 0o644)
            .map_err(|e| format!("cannot write pidfile: {e}"))?;
        Ok(Pidfile(path.to_path_buf()))
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.0)
            .map(|t| t.trim() == std::process::id().to_string())
            .unwrap_or(false);
        if ours {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}
