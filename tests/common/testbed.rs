//! Drives the testbed of real peers (tests/testbed/testbed.py) from Rust integration tests.
//!
//! The testbed's addresses are fixed (127.0.10.0/24), so one runs at a time: [`Testbed::up`]
//! holds a lock until the testbed is dropped — a mutex for this binary's threads and a lock
//! directory for other processes (another `cargo test`, `make demo`), taken over when the
//! process that made it is gone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

/// Debian's python3: python3-slixmpp is installed for it.
pub const PYTHON: &str = "/usr/bin/python3";

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testbed/testbed.py")
}

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const MACHINE_LOCK: &str = "/tmp/xsgw-testbed.lock";

/// The machine-wide side of the lock: a directory holding the owner's pid.
struct MachineLock;

impl MachineLock {
    fn take() -> MachineLock {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
        loop {
            match std::fs::create_dir(MACHINE_LOCK) {
                Ok(()) => {
                    let _ = std::fs::write(
                        Path::new(MACHINE_LOCK).join("pid"),
                        std::process::id().to_string(),
                    );
                    return MachineLock;
                }
                Err(_) => {
                    let owner = std::fs::read_to_string(Path::new(MACHINE_LOCK).join("pid"))
                        .ok()
                        .and_then(|p| p.trim().parse::<u32>().ok());
                    let owner_alive =
                        owner.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                    if owner.is_some() && !owner_alive {
                        let _ = std::fs::remove_dir_all(MACHINE_LOCK);
                        continue;
                    }
                    assert!(
                        std::time::Instant::now() < deadline,
                        "another testbed held {MACHINE_LOCK} for 10 minutes"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            }
        }
    }
}

impl Drop for MachineLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(MACHINE_LOCK);
    }
}

/// A running testbed; stopped (every service by PID) when dropped.
pub struct Testbed {
    pub dir: PathBuf,
    /// testbed.env: testbed.json flattened (`PKI_GATEWAY_CERT`, `XMPP_USERS_0_JID`, ...).
    pub env: HashMap<String, String>,
    _machine: MachineLock,
    _lock: MutexGuard<'static, ()>,
}

impl Testbed {
    /// Starts the testbed in a fresh directory; `options` are `testbed.py up` options such as
    /// `--prosody-s2s 127.0.10.21` or `--s2s-require-encryption`.
    pub fn up(tag: &str, options: &[&str]) -> Testbed {
        let lock = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let machine = MachineLock::take();
        let dir = std::env::temp_dir().join(format!("xsgw-testbed-{tag}-{}", std::process::id()));
        let out = Command::new(PYTHON)
            .arg(script())
            .args(["up", "--dir"])
            .arg(&dir)
            .args(options)
            .output()
            .expect("python3 runs the testbed (make test installs it)");
        assert!(
            out.status.success(),
            "testbed up failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(dir.join("testbed.env")).unwrap();
        let env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        Testbed {
            dir,
            env,
            _machine: machine,
            _lock: lock,
        }
    }

    /// A value of testbed.env; panics with the key when absent.
    pub fn get(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("testbed.env has no {key}"))
    }

    /// The xsgw configuration for this testbed (testbed.py gateway-config).
    pub fn gateway_config(&self, log_level: &str) -> String {
        let out = Command::new(PYTHON)
            .arg(script())
            .args(["gateway-config", "--log-level", log_level, "--dir"])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs another testbed.py command against this testbed (e.g. `restart kamailio`).
    pub fn command(&self, args: &[&str]) -> std::process::Output {
        Command::new(PYTHON)
            .arg(script())
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .output()
            .unwrap()
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = Command::new(PYTHON)
            .arg(script())
            .args(["down", "--dir"])
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
