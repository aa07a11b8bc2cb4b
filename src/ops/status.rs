//! `xsgw status [-c FILE] [--json]`: asks the running gateway over its control socket
//! (`<[gateway] state_dir>/control.sock`, see `crate::gateway::control`) and prints its
//! answer. Exit 0 with an answer; 1 when xsgw is not running (or does not answer), said
//! plainly on stderr.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::gateway::control::socket_path;

use super::EXIT_FAILURE;

/// How long the client waits for the gateway's answer (the gateway gives its router 2 s).
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(5);
/// Largest answer read.
const MAX_ANSWER: u64 = 8 << 20;

/// Why no answer came.
#[derive(Debug)]
#[non_exhaustive]
pub enum AskError {
    /// Nothing listens on the socket: xsgw is not running (with this state_dir).
    NotRunning { path: PathBuf },
    /// The socket exists but this user may not use it.
    Forbidden { path: PathBuf },
    /// The gateway was reached but did not answer usefully.
    Failed { path: PathBuf, why: String },
}

impl std::fmt::Display for AskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AskError::NotRunning { path } => write!(
                f,
                "xsgw is not running (nothing answers on its control socket {})",
                path.display()
            ),
            AskError::Forbidden { path } => write!(
                f,
                "cannot use the control socket {}: permission denied; run this as the service user (xsgw) or root",
                path.display()
            ),
            AskError::Failed { path, why } => {
                write!(f, "the gateway on {} did not answer: {why}", path.display())
            }
        }
    }
}

/// Sends `request` (`status`, `status json`, `status live`) to the gateway whose state
/// directory is `state_dir` and returns its answer.
pub fn ask(state_dir: &Path, request: &str) -> Result<String, AskError> {
    let path = socket_path(state_dir);
    let mut stream = UnixStream::connect(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => AskError::Forbidden { path: path.clone() },
        _ => AskError::NotRunning { path: path.clone() },
    })?;
    let failed = |why: String| AskError::Failed {
        path: path.clone(),
        why,
    };
    let _ = stream.set_read_timeout(Some(ANSWER_DEADLINE));
    let _ = stream.set_write_timeout(Some(ANSWER_DEADLINE));
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(|e| failed(e.to_string()))?;
    let mut answer = String::new();
    stream
        .take(MAX_ANSWER)
        .read_to_string(&mut answer)
        .map_err(|e| failed(e.to_string()))?;
    if answer.is_empty() {
        return Err(failed("it closed the connection without an answer".into()));
    }
    if let Some(why) = answer.strip_prefix("error: ") {
        return Err(failed(why.trim_end().to_owned()));
    }
    Ok(answer)
}

/// Runs `xsgw status`; the exit status.
pub fn status(config: &Path, json: bool) -> i32 {
    let state_dir = match crate::config::load(config) {
        Ok((config, _)) => config.gateway.state_dir,
        Err(e) => {
            eprintln!("xsgw status: cannot read the configuration: {e}");
            return EXIT_FAILURE;
        }
    };
    match ask(&state_dir, if json { "status json" } else { "status" }) {
        Ok(answer) => {
            print!("{answer}");
            0
        }
        Err(e) => {
            eprintln!("xsgw status: {e}");
            EXIT_FAILURE
        }
    }
}
