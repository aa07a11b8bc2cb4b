//! `xsgw reload [-c FILE] [--pidfile FILE]`: checks the file as `xsgw check` does (both
//! stages, certificates included) and only when it is usable sends SIGHUP to the process the
//! pidfile names, which then reads, checks and applies the file itself (see
//! `crate::gateway::live`). The signal is sent with `/bin/kill`, as the systemd unit's
//! ExecReload does: `kill(2)` from Rust needs `unsafe` or a new crate.

use std::path::Path;

use crate::config::{self, ConfigError};

use super::EXIT_FAILURE;

/// Where `xsgw reload` looks when `--pidfile` is not given (the init script's pidfile).
pub const DEFAULT_PIDFILE: &str = "/run/xsgw/xsgw.pid";

pub fn reload(path: &Path, pidfile: &Path) -> i32 {
    match config::check_file(path) {
        Ok((_, _, report)) => {
            for line in report.lines() {
                eprintln!("{line}");
            }
        }
        Err(ConfigError::Invalid(report)) => {
            for line in report.lines() {
                eprintln!("{line}");
            }
            eprintln!(
                "xsgw reload: {} has errors; xsgw was not signalled and keeps its configuration",
                path.display()
            );
            return EXIT_FAILURE;
        }
        Err(other) => {
            eprintln!("xsgw reload: {other}; xsgw was not signalled");
            return EXIT_FAILURE;
        }
    }
    let pid = match running_xsgw(pidfile) {
        Ok(pid) => pid,
        Err(why) => {
            eprintln!("xsgw reload: {why}");
            return EXIT_FAILURE;
        }
    };
    match std::process::Command::new("/bin/kill")
        .args(["-HUP", &pid.to_string()])
        .status()
    {
        Ok(status) if status.success() => {
            println!(
                "{} checked; SIGHUP sent to xsgw (pid {pid}): its log says what changed",
                path.display()
            );
            0
        }
        Ok(status) => {
            eprintln!("xsgw reload: kill -HUP {pid} failed ({status})");
            EXIT_FAILURE
        }
        Err(e) => {
            eprintln!("xsgw reload: cannot run /bin/kill: {e}");
            EXIT_FAILURE
        }
    }
}

/// The pid in `pidfile`, when it names a running xsgw (a stale pidfile's number may have
/// been given to another program since, which SIGHUP would end).
fn running_xsgw(pidfile: &Path) -> Result<u32, String> {
    let text = std::fs::read_to_string(pidfile).map_err(|e| {
        format!(
            "cannot read pidfile {}: {e} (is xsgw running with --pidfile? under systemd: systemctl reload xsgw)",
            pidfile.display()
        )
    })?;
    let pid: u32 = text
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 1)
        .ok_or_else(|| format!("pidfile {} holds no process id", pidfile.display()))?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).map_err(|_| {
        format!(
            "pidfile {} names pid {pid}, which is not running",
            pidfile.display()
        )
    })?;
    if comm.trim() != "xsgw" {
        return Err(format!(
            "pidfile {} names pid {pid}, which is `{}`, not xsgw; not signalled",
            pidfile.display(),
            comm.trim()
        ));
    }
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfile_naming_another_program_is_not_signalled() {
        let dir = std::env::temp_dir().join(format!("xsgw-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("x.pid");
        // This test binary is not called xsgw.
        std::fs::write(&pidfile, format!("{}\n", std::process::id())).unwrap();
        let err = running_xsgw(&pidfile).unwrap_err();
        assert!(err.contains("not xsgw"), "{err}");
        std::fs::write(&pidfile, "garbage").unwrap();
        assert!(running_xsgw(&pidfile)
            .unwrap_err()
            .contains("no process id"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(running_xsgw(&pidfile).unwrap_err().contains("cannot read"));
    }
}
