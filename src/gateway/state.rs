//! Files under `[gateway] state_dir`: the directory itself, the dialback secret and the
//! presence subscriptions.
//!
//! The secret is generated on first start (32 random bytes, hex, mode 0600) and written
//! atomically (temporary file, fsync, rename), so a crash never leaves half a secret and two
//! instances sharing the file read the same value.
//!
//! The subscriptions ([`SubscriptionStore`], owned by the state writer thread) are a
//! snapshot, `subscriptions` (one line per subscription, sorted, written atomically), and a
//! journal of the changes since, `subscriptions.journal` (`+<line>` puts a subscription,
//! `-<key>` removes one; appended and fsynced once per batch). The router hands the writer
//! only what changed (at most once a second), so a change costs the router its own lines
//! whatever the table's size: with 200,000 subscriptions, rewriting the 14 MB table from the
//! router thread stalled every message for about half a second. The journal is folded into
//! a new snapshot by the writer when it outgrows the snapshot (so writing stays O(1)
//! amortised per change) and at start. Why a journal rather than a snapshot the writer
//! builds alone: the writer would need the whole table each time anyway, and the journal
//! makes each save a small append, so a `kill -9` loses at most the last second.
//!
//! Crash safety: a journal record is one line; a torn last line (a crash mid-append) is
//! ignored at start. Snapshot and journal carry a generation (`# xsgw-subscriptions <n>` as
//! the snapshot's first line, `#<n>` as the journal's): a journal applies only to the
//! snapshot of its generation, so a crash between a new snapshot's rename and the journal's
//! reset cannot replay old changes over newer ones.

use std::collections::HashMap;
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

/// The saved presence subscriptions; see the module documentation.
#[derive(Debug)]
pub struct SubscriptionStore {
    path: PathBuf,
    journal_path: PathBuf,
    /// Key → line.
    lines: HashMap<String, String>,
    journal: Option<fs::File>,
    journal_bytes: u64,
    snapshot_bytes: u64,
    /// A journal write failed: the next batch rewrites the snapshot instead.
    must_compact: bool,
    generation: u64,
}

const SNAPSHOT_HEADER: &str = "# xsgw-subscriptions ";

/// The journal is folded into the snapshot once it is this big and bigger than the snapshot.
const MIN_COMPACT: u64 = 64 * 1024;

impl SubscriptionStore {
    /// Reads the snapshot at `path` and its journal (`<path>.journal`), folds them into a new
    /// snapshot when the journal had anything, and returns the store with the subscriptions'
    /// lines as text (for [`crate::bridge::Bridge::restore_subscriptions`]).
    pub fn open(path: &Path) -> Result<(SubscriptionStore, String), StateError> {
        let journal_path = PathBuf::from(format!("{}.journal", path.display()));
        let read = |p: &Path| match fs::read_to_string(p) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(error) => Err(StateError::Io {
                path: p.to_path_buf(),
                what: "read",
                error,
            }),
        };
        let snapshot = read(path)?;
        let journal = read(&journal_path)?;
        let generation = snapshot
            .lines()
            .next()
            .and_then(|l| l.strip_prefix(SNAPSHOT_HEADER))
            .and_then(|g| g.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let mut lines = HashMap::new();
        for line in snapshot
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with(SNAPSHOT_HEADER))
        {
            // A line that is not ours is kept under itself: restore reports it.
            let key = crate::translate::presence::line_key(line).unwrap_or_else(|| line.into());
            lines.insert(key, line.to_owned());
        }
        // Only complete records: a crash may have torn the last one.
        let complete = journal.rfind('\n').map_or("", |end| &journal[..end]);
        let journal_generation = complete
            .lines()
            .next()
            .and_then(|l| l.strip_prefix('#'))
            .and_then(|g| g.trim().parse::<u64>().ok())
            .unwrap_or(0);
        // A journal of another generation was folded into this snapshot already.
        let records = if journal_generation == generation {
            complete
        } else {
            ""
        };
        for record in records.lines() {
            if let Some(line) = record.strip_prefix('+') {
                let key = crate::translate::presence::line_key(line).unwrap_or_else(|| line.into());
                lines.insert(key, line.to_owned());
            } else if let Some(key) = record.strip_prefix('-') {
                lines.remove(key);
            }
        }
        let mut store = SubscriptionStore {
            path: path.to_path_buf(),
            journal_path,
            lines,
            journal: None,
            journal_bytes: journal.len() as u64,
            snapshot_bytes: snapshot.len() as u64,
            must_compact: false,
            generation,
        };
        if !journal.is_empty() {
            store.compact()?;
        }
        let text = store.snapshot_text();
        Ok((store, text))
    }

    /// How many subscriptions are saved.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The lines, sorted, after `header` if any.
    fn snapshot_text_with(&self, header: Option<&str>) -> String {
        let mut sorted: Vec<&String> = self.lines.values().collect();
        sorted.sort();
        let mut text =
            String::with_capacity(sorted.iter().map(|l| l.len() + 1).sum::<usize>() + 64);
        if let Some(h) = header {
            text.push_str(h);
            text.push('\n');
        }
        for line in sorted {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    fn snapshot_text(&self) -> String {
        self.snapshot_text_with(None)
    }

    /// Saves `changes` (in order): appended to the journal and synced; the journal is folded
    /// into a new snapshot when it has outgrown it.
    pub fn apply(
        &mut self,
        changes: &[crate::bridge::SubscriptionChange],
    ) -> Result<(), StateError> {
        use crate::bridge::SubscriptionChange as C;
        let mut records = String::new();
        for change in changes {
            match change {
                C::Put { key, line } => {
                    if line.contains(['\n', '\r']) || key.contains(['\n', '\r']) {
                        continue; // the line format escapes them: never from the bridge
                    }
                    records.push('+');
                    records.push_str(line);
                    self.lines.insert(key.clone(), line.clone());
                }
                C::Remove { key } => {
                    if key.contains(['\n', '\r']) {
                        continue;
                    }
                    records.push('-');
                    records.push_str(key);
                    self.lines.remove(key);
                }
            }
            records.push('\n');
        }
        if self.must_compact
            || self.journal_bytes + records.len() as u64 > self.snapshot_bytes.max(MIN_COMPACT)
        {
            return self.compact();
        }
        let result = self.append(records.as_bytes());
        if result.is_err() {
            self.must_compact = true;
            self.journal = None;
        }
        result
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |error| StateError::Io { path, what, error }
        };
        if self.journal.is_none() {
            let mut file = fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&self.journal_path)
                .map_err(io("open the journal", &self.journal_path))?;
            if self.journal_bytes == 0 {
                let header = format!("#{}\n", self.generation);
                file.write_all(header.as_bytes())
                    .map_err(io("append to", &self.journal_path))?;
                self.journal_bytes += header.len() as u64;
            }
            self.journal = Some(file);
        }
        if let Some(file) = self.journal.as_mut() {
            file.write_all(bytes)
                .map_err(io("append to", &self.journal_path))?;
            file.sync_data().map_err(io("sync", &self.journal_path))?;
        }
        self.journal_bytes += bytes.len() as u64;
        Ok(())
    }

    /// Writes every subscription as a new snapshot, then empties the journal.
    pub fn compact(&mut self) -> Result<(), StateError> {
        let generation = self.generation + 1;
        let text = self.snapshot_text_with(Some(&format!("{SNAPSHOT_HEADER}{generation}")));
        self.must_compact = true;
        self.journal = None;
        write_atomically(&self.path, text.as_bytes(), 0o600)?;
        // From here the old journal is of an older generation: ignored even if it stays.
        self.generation = generation;
        self.snapshot_bytes = text.len() as u64;
        let header = format!("#{generation}\n");
        write_atomically(&self.journal_path, header.as_bytes(), 0o600)?;
        self.journal_bytes = header.len() as u64;
        self.must_compact = false;
        Ok(())
    }
}

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

    fn line(state: &str, n: u32) -> String {
        format!("xsgw-presence/1 in {state} - u{n}@contoso.test x{n}@gmail.test -")
    }

    fn put(state: &str, n: u32) -> crate::bridge::SubscriptionChange {
        let line = line(state, n);
        crate::bridge::SubscriptionChange::Put {
            key: crate::translate::presence::line_key(&line).unwrap(),
            line,
        }
    }

    fn remove(n: u32) -> crate::bridge::SubscriptionChange {
        crate::bridge::SubscriptionChange::Remove {
            key: format!("in u{n}@contoso.test x{n}@gmail.test"),
        }
    }

    #[test]
    fn subscriptions_are_journaled_then_folded_and_read_back() {
        let dir = temp_dir("journal");
        ensure_state_dir(&dir).unwrap();
        let path = dir.join("subscriptions");
        // A snapshot written by an earlier version (no generation line).
        fs::write(
            &path,
            format!("{}\n{}\n", line("approved", 1), line("approved", 2)),
        )
        .unwrap();
        let (mut store, text) = SubscriptionStore::open(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        store.apply(&[put("pending", 3), remove(1)]).unwrap();
        store.apply(&[put("active", 3)]).unwrap();
        // Only appended: the snapshot is as it was.
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 2);
        let journal = fs::read_to_string(dir.join("subscriptions.journal")).unwrap();
        assert_eq!(journal.lines().count(), 4, "{journal}");
        // A crash tore the last record: it is ignored, the rest applies.
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(dir.join("subscriptions.journal"))
            .unwrap();
        f.write_all(b"+xsgw-presence/1 in active - u9@cont")
            .unwrap();
        drop((store, f));
        let (store, text) = SubscriptionStore::open(&path).unwrap();
        assert_eq!(
            text,
            format!("{}\n{}\n", line("active", 3), line("approved", 2))
        );
        assert_eq!(store.len(), 2);
        // Opening folded the journal into a new snapshot of the next generation.
        let snapshot = fs::read_to_string(&path).unwrap();
        assert!(
            snapshot.starts_with("# xsgw-subscriptions 1\n"),
            "{snapshot}"
        );
        assert_eq!(
            fs::read_to_string(dir.join("subscriptions.journal")).unwrap(),
            "#1\n"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_journal_of_an_older_generation_is_not_replayed() {
        let dir = temp_dir("generation");
        ensure_state_dir(&dir).unwrap();
        let path = dir.join("subscriptions");
        let (mut store, _) = SubscriptionStore::open(&path).unwrap();
        store.apply(&[put("pending", 1)]).unwrap();
        let old_journal = fs::read(dir.join("subscriptions.journal")).unwrap();
        // The journal outgrows the snapshot: folded (generation 1), with the later change.
        let many: Vec<_> = (0..2000).map(|_| put("pending", 1)).collect();
        store.apply(&many).unwrap();
        store.apply(&[put("active", 1)]).unwrap();
        assert!(fs::read_to_string(&path)
            .unwrap()
            .starts_with("# xsgw-subscriptions 1"));
        store.compact().unwrap();
        // A crash after a snapshot's rename, before the journal's reset: the old journal
        // (generation 0, saying "pending") must not undo the snapshot's "active".
        fs::write(dir.join("subscriptions.journal"), &old_journal).unwrap();
        let (_, text) = SubscriptionStore::open(&path).unwrap();
        assert_eq!(text, format!("{}\n", line("active", 1)));
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
