//! `xsgw run` as a child process, its stderr collected line by line, as an operator sees it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `xsgw run`; killed when dropped.
pub struct Running {
    pub child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Running {
    /// Starts `xsgw run -c config` (with `--pidfile` when given), RUST_LOG cleared so the
    /// configuration's level applies.
    pub fn start(config: &Path, pidfile: Option<&Path>) -> Running {
        Running::start_with_env(config, pidfile, &[])
    }

    /// [`Running::start`] with extra environment variables.
    pub fn start_with_env(config: &Path, pidfile: Option<&Path>, env: &[(&str, &str)]) -> Running {
        let mut command = super::xsgw();
        command.envs(env.iter().copied());
        command.args(["run", "-c"]).arg(config);
        if let Some(pidfile) = pidfile {
            command.arg("--pidfile").arg(pidfile);
        }
        let mut child = command
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Running { child, log }
    }

    /// Waits up to 20 s for a log line containing `text`; returns it.
    pub fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(text)) {
                return line.clone();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no xsgw log line with `{text}`; log:\n{}",
            self.log.lock().unwrap().join("\n")
        );
    }

    /// The log lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Sends a signal by name (`TERM`, `HUP`, `INT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The exit status, waiting at most `within` (then the process is killed and the test fails).
    pub fn wait_exit(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "xsgw did not exit within {within:?}; log:\n{}",
                    self.log.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
