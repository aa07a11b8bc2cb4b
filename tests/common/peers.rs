//! The testbed's test peers (`testbed.py sip-send`, `sip-recv`, `sip-session`, `xmpp-send`,
//! `xmpp-recv`) driven from Rust: run one to completion or in the background, collect the JSON
//! lines it prints, and read fields out of them. There is no JSON crate in the project; the
//! peers print one object per line with `json.dumps` (`": "` separators, non-ASCII as UTF-8),
//! so a field is found by its key and its string value unescaped here.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::process::Running;
use super::testbed::{script, Testbed, PYTHON};

/// Writes `config` as `D/xsgw.ini`, starts `xsgw run` on it and waits until both listeners
/// are up.
pub fn start_gateway(testbed: &Testbed, config: &str) -> Running {
    let path = testbed.dir.join("xsgw.ini");
    std::fs::write(&path, config).unwrap();
    let gw = Running::start(&path, None);
    gw.wait_for("started: XMPP on 127.0.10.100:5269");
    gw
}

/// Runs a testbed peer to its end (at most 60 s) and returns its stdout lines.
pub fn run_peer(testbed: &Testbed, args: &[&str]) -> Vec<String> {
    Peer::start(testbed, args).finish(Duration::from_secs(60))
}

/// A testbed peer running in the background, its stdout and stderr collected line by line.
pub struct Peer {
    child: Child,
    what: String,
    out: Lines,
    err: Lines,
    readers: Vec<JoinHandle<()>>,
}

type Lines = Arc<Mutex<Vec<String>>>;

fn collect(stream: impl std::io::Read + Send + 'static) -> (Lines, JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    (lines, reader)
}

impl Peer {
    /// Starts `testbed.py ARGS --dir D`.
    pub fn start(testbed: &Testbed, args: &[&str]) -> Peer {
        Peer::start_in(&testbed.dir, args)
    }

    /// Starts a peer that takes commands on stdin ([`Peer::send`]): `sip-presence`,
    /// `xmpp-presence`.
    pub fn start_interactive(testbed: &Testbed, args: &[&str]) -> Peer {
        Peer::spawn(&testbed.dir, args, Stdio::piped())
    }

    fn start_in(dir: &Path, args: &[&str]) -> Peer {
        Peer::spawn(dir, args, Stdio::null())
    }

    fn spawn(dir: &Path, args: &[&str], stdin: Stdio) -> Peer {
        let mut child = Command::new(PYTHON)
            .arg(script())
            .args(args)
            .arg("--dir")
            .arg(dir)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs the testbed peers");
        let (out, out_reader) = collect(child.stdout.take().unwrap());
        let (err, err_reader) = collect(child.stderr.take().unwrap());
        Peer {
            child,
            what: args.join(" "),
            out,
            err,
            readers: vec![out_reader, err_reader],
        }
    }

    /// Sends one command line (a JSON object) to an interactive peer.
    pub fn send(&mut self, command: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("started interactive");
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
    }

    /// How many lines the peer has printed: a mark for [`Peer::wait_since`].
    pub fn mark(&self) -> usize {
        self.out.lock().unwrap().len()
    }

    /// Waits up to `within` for a line printed after `mark` that contains every one of
    /// `texts`; returns it.
    pub fn wait_since(&self, mark: usize, texts: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let found = self
                .lines()
                .into_iter()
                .skip(mark)
                .find(|l| texts.iter().all(|t| l.contains(t)));
            if let Some(line) = found {
                return line;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{} printed no line with {texts:?} after line {mark}:\n{}",
            self.what,
            self.transcript()
        );
    }

    /// Whether any line printed after `mark` contains every one of `texts`.
    pub fn printed_since(&self, mark: usize, texts: &[&str]) -> bool {
        self.lines()
            .into_iter()
            .skip(mark)
            .any(|l| texts.iter().all(|t| l.contains(t)))
    }

    /// The stdout lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.out.lock().unwrap().clone()
    }

    /// Waits up to `within` for a stdout line containing `text`; returns it.
    pub fn wait_for(&self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(line) = self.lines().into_iter().find(|l| l.contains(text)) {
                return line;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{} printed no line with `{text}`:\n{}",
            self.what,
            self.transcript()
        );
    }

    /// Waits for `{"ready": true...`, the line every receiving peer prints once it listens.
    pub fn wait_ready(&self) {
        let line = self.wait_for("\"ready\"", Duration::from_secs(15));
        assert!(
            line.contains("\"ready\": true"),
            "{} not ready: {line}",
            self.what
        );
    }

    /// Waits for the peer to exit (killing it after `within`) and returns its stdout lines.
    pub fn finish(mut self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not end within {within:?}:\n{}",
                    self.what,
                    self.transcript()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The readers end at EOF, right after the exit: then every line is in.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        self.lines()
    }

    /// Everything the peer printed, for failure messages.
    pub fn transcript(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.out.lock().unwrap().join("\n"),
            self.err.lock().unwrap().join("\n")
        )
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first string value of `key` in a JSON line, unescaped; `None` when the key is absent
/// or its value is not a string (e.g. `null`).
pub fn json_str(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\": \""))? + key.len() + 5;
    let mut value = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                'r' => value.push('\r'),
                't' => value.push('\t'),
                'b' => value.push('\u{8}'),
                'f' => value.push('\u{c}'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    let unit = u32::from_str_radix(&hex, 16).ok()?;
                    value.push(char::from_u32(unit).unwrap_or('\u{fffd}'));
                }
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

/// The first integer value of `key` in a JSON line; `None` when absent or not a number.
pub fn json_int(line: &str, key: &str) -> Option<i64> {
    let start = line.find(&format!("\"{key}\": "))? + key.len() + 4;
    let digits: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    digits.parse().ok()
}

/// The lines of a peer's output that hold one kind of object (`"request"`, `"message"`,
/// `"sent"`), in order.
pub fn objects<'a>(lines: &'a [String], kind: &str) -> Vec<&'a String> {
    let prefix = format!("{{\"{kind}\": ");
    lines.iter().filter(|l| l.starts_with(&prefix)).collect()
}

/// What `sip-send` reported: the final status of each MESSAGE, in order (`None`: timeout).
pub fn finals(result: &str) -> Vec<Option<i64>> {
    let Some(list) = result.split("\"finals\": [").nth(1) else {
        return Vec::new();
    };
    // Each entry ends with '}'; the list with '}]' (a Warning may hold a ']').
    let list = list.split("}]").next().unwrap_or("");
    list.split("{\"code\": ")
        .skip(1)
        .map(|entry| entry.split(',').next().and_then(|c| c.parse().ok()))
        .collect()
}

/// Stanzas an `xmpp-recv` printed, with the given `kind` (message, chatstate, error).
pub fn stanzas<'a>(lines: &'a [String], kind: &str) -> Vec<&'a String> {
    let kind = format!("\"kind\": \"{kind}\"");
    objects(lines, "message")
        .into_iter()
        .filter(|l| l.contains(&kind))
        .collect()
}

/// Requests a `sip-recv` printed, with the given method.
pub fn requests<'a>(lines: &'a [String], method: &str) -> Vec<&'a String> {
    let method = format!("\"method\": \"{method}\"");
    objects(lines, "request")
        .into_iter()
        .filter(|l| l.contains(&method))
        .collect()
}
