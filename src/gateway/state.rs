//! Files under `[gateway] state_dir`: the directory itself and the dialback secret.
//!
//! The secret is generated on first start (32 random bytes, hex, mode 0600) and written
//! atomically (temporary file, fsync, rename), so a crash never leaves half a secret and two
//! instances sharing the file read the same value.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::rand::SecureRandom;

/// Shortest secret accepted from a file: shorter ones are guessable.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest secret read: a larger file is not a secret we wrote.
const MAX_SECRET_LEN: usize = 4096;

/// Why the state directory or the dialback secret could not be prepared.
#[derive(Debug)]
#[non_exhaustive]
pub enum StateError {
    /// A directory or file operation failed; `what` says which and why it was needed.
    Io {
        path: PathBuf,
        what: &'static str,
        error: std::io::Error,
    },
    /// The secret file exists but is not usable.
    BadSecret { path: PathBuf, reason: String },
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateError::Io { path, what, error } => {
                write!(f, "cannot {what} {}: {error}", path.display())
            }
            StateError::BadSecret { path, reason } => write!(
                f,
                "dialback secret {} is unusable: {reason}; delete it to have a new one generated (instances sharing it must then get the new copy)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for StateError {}

/// Creates `dir` (mode 0750) when missing.
pub fn ensure_state_dir(dir: &Path) -> Result<(), StateError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(|error| StateError::Io {
            path: dir.to_path_buf(),
            what: "create the state directory",
            error,
        })
}

/// Reads the dialback secret at `path`, generating it first when the file does not exist.
/// Returns the secret and whether it was generated now.
pub fn load_or_create_secret(path: &Path) -> Result<(String, bool), StateError> {
    match fs::read(path) {
        Ok(bytes) => parse_secret(path, &bytes).map(|s| (s, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = generate_secret(path)?;
            write_atomically(path, secret.as_bytes(), 0o600)?;
            Ok((secret, true))
        }
        Err(error) => Err(StateError::Io {
            path: path.to_path_buf(),
            what: "read the dialback secret",
            error,
        }),
    }
}

fn parse_secret(path: &Path, bytes: &[u8]) -> Result<String, StateError> {
    let bad = |reason: String| StateError::BadSecret {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() > MAX_SECRET_LEN {
        return Err(bad(format!(
            "it is {} bytes, over {MAX_SECRET_LEN}",
            bytes.len()
        )));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| bad("it is not text".into()))?;
    let secret = text.trim();
    if secret.len() < MIN_SECRET_LEN {
        return Err(bad(format!(
            "it holds {} characters, fewer than {MIN_SECRET_LEN}",
            secret.len()
        )));
    }
    Ok(secret.to_string())
}

fn generate_secret(path: &Path) -> Result<String, StateError> {
    let mut raw = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| StateError::Io {
            path: path.to_path_buf(),
            what: "get random bytes for",
            error: std::io::Error::other("the system random source failed"),
        })?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `contents` to `path` so that readers see the old file or the whole new one: a
/// temporary file in the same directory, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), StateError> {
    let io = |what: &'static str| {
        move |error| StateError::Io {
            path: path.to_path_buf(),
            what,
            error,
        }
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temporary)
            .map_err(io("create a temporary file beside"))?;
        // mode() is filtered by the umask; the secret must be exactly `mode`.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io("set permissions on"))?;
        file.write_all(contents).map_err(io("write"))?;
        file.sync_all().map_err(io("sync"))?;
        fs::rename(&temporary, path).map_err(io("rename a temporary file onto"))?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xsgw-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn secret_is_generated_private_and_stable() {
        let dir = temp_dir("secret");
        ensure_state_dir(&dir).unwrap();
        let path = dir.join("dialback.secret");
        let (first, generated) = load_or_create_secret(&path).unwrap();
        assert!(generated);
        assert_eq!(first.len(), 64);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (second, generated) = load_or_create_secret(&path).unwrap();
        assert!(!generated);
        assert_eq!(first, second);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn short_secret_is_refused_with_advice() {
        let dir = temp_dir("short");
        ensure_state_dir(&dir).unwrap();
        let path = dir.join("dialback.secret");
        fs::write(&path, "abc\n").unwrap();
        let err = load_or_create_secret(&path).unwrap_err().to_string();
        assert!(err.contains("fewer than 16"), "{err}");
        assert!(err.contains("delete it"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
