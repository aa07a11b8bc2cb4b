//! Log set-up: one line per event with level and thread (the thread name carries the
//! connection: `xmpp-in-17`, `sip-in-3`, `router`). Colour only on a terminal.
//!
//! Two formats:
//! - on a terminal or into a file (the init script's log): a timestamp of our own,
//!   `2026-12-02T16:02:36.409Z INFO  [router] ...`;
//! - under systemd, when stderr is the journal (`JOURNAL_STREAM` names stderr's device and
//!   inode, as systemd.exec(5) says to check): no timestamp (journald adds its own) and the
//!   level as a syslog priority prefix (`<3>` error ... `<7>` debug, sd-daemon(3)), so
//!   `journalctl -p warning` filters as admins expect.

use std::io::Write;

/// Starts logging at `level`, unless RUST_LOG says otherwise. Safe to call more than once.
///
/// Without RUST_LOG the logger itself passes every level and `log::set_max_level` is the
/// one filter, so [`set_level`] can change it while running (a reload).
pub fn init(level: log::LevelFilter) {
    let mut builder = env_logger::Builder::new();
    let rust_log = std::env::var("RUST_LOG").ok();
    match &rust_log {
        Some(spec) => {
            builder.parse_filters(spec);
        }
        None => {
            builder.filter_level(log::LevelFilter::Trace);
        }
    }
    let journal = stderr_is_journal(std::env::var("JOURNAL_STREAM").ok().as_deref());
    if journal {
        builder.write_style(env_logger::WriteStyle::Never);
    } else {
        builder.write_style(env_logger::WriteStyle::Auto);
    }
    builder.format(move |buf, record| {
        let thread = std::thread::current();
        // A line that shows a peer's string without `logsafe::escaped` still cannot carry a
        // raw CR/LF or terminal escape: the whole line is escaped once more here.
        let line = record.args().to_string();
        let line = crate::logsafe::escape_line(&line);
        let thread = thread.name().unwrap_or("-");
        if journal {
            return writeln!(
                buf,
                "<{}>[{thread}] {line}",
                syslog_priority(record.level())
            );
        }
        let style = buf.default_level_style(record.level());
        writeln!(
            buf,
            "{} {style}{:<5}{style:#} [{thread}] {line}",
            buf.timestamp_millis(),
            record.level(),
        )
    });
    if builder.try_init().is_ok() && rust_log.is_none() {
        log::set_max_level(level);
    }
}

/// Changes the log level of a running process (a reload); `Err` says why it stays (RUST_LOG
/// set in the environment overrides `[log] level`).
pub fn set_level(level: log::LevelFilter) -> Result<(), String> {
    if std::env::var_os("RUST_LOG").is_some() {
        return Err("RUST_LOG is set: [log] level not applied".into());
    }
    log::set_max_level(level);
    Ok(())
}

/// The syslog priority of a log level (sd-daemon(3) prefixes).
pub fn syslog_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// Whether stderr is the journal stream systemd connected: `JOURNAL_STREAM` is
/// `DEVICE:INODE` of that stream, and stderr must still be it (a child whose stderr was
/// redirected inherits the variable but not the stream).
fn stderr_is_journal(journal_stream: Option<&str>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = journal_stream.and_then(parse_journal_stream) else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

fn parse_journal_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.trim().split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_is_device_and_inode() {
        assert_eq!(parse_journal_stream("8:12345"), Some((8, 12345)));
        assert_eq!(parse_journal_stream("8:x"), None);
        assert_eq!(parse_journal_stream(""), None);
        assert!(!stderr_is_journal(None));
        // Another stream's numbers: stderr is not the journal.
        assert!(!stderr_is_journal(Some("0:1")));
    }

    #[test]
    fn stderr_matching_journal_stream_is_detected() {
        use std::os::unix::fs::MetadataExt;
        let Ok(m) = std::fs::metadata("/proc/self/fd/2") else {
            return;
        };
        assert!(stderr_is_journal(Some(&format!("{}:{}", m.dev(), m.ino()))));
    }

    #[test]
    fn levels_are_syslog_priorities() {
        assert_eq!(syslog_priority(log::Level::Error), 3);
        assert_eq!(syslog_priority(log::Level::Warn), 4);
        assert_eq!(syslog_priority(log::Level::Info), 6);
        assert_eq!(syslog_priority(log::Level::Debug), 7);
    }
}
