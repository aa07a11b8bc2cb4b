//! Command-line parsing, by hand: six commands and a few options do not need a crate.

use std::ffi::OsString;
use std::path::PathBuf;

/// Where `run` and `check` look when `-c` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/xsgw/xsgw.ini";

pub const USAGE: &str = "\
xsgw — XMPP <-> SIP federation gateway

Usage:
  xsgw run   [-c FILE] [--pidfile FILE]   run in the foreground, logging to stderr
  xsgw check [-c FILE]                    check the configuration; list every problem
  xsgw reload [-c FILE] [--pidfile FILE]  check the configuration, then have the running
                                          xsgw apply it (SIGHUP); exit 1 without
                                          signalling when the file has errors
  xsgw diagnose [-c FILE] [--json] [--deep] [--only ID...]
                                          find deployment mistakes (DNS, certificates,
                                          firewall, Edge) with the network; exit 1 on a fail
  xsgw status [-c FILE] [--json]          what the running xsgw holds: Edge connections,
                                          S2S streams, counters, last errors (exit 1 when
                                          xsgw is not running)
  xsgw version                            print the version
  xsgw help                               print this help

Options:
  -c, --config FILE   configuration file (default: /etc/xsgw/xsgw.ini)
  --pidfile FILE      run: write the process id to FILE while running;
                      reload: the process to signal (default: /run/xsgw/xsgw.pid)
  --json              diagnose: one JSON object per check
                      {\"id\",\"status\",\"subject\",\"detail\",\"fix\"};
                      status: one JSON object with the same content as the text
  --deep              diagnose: also open and authenticate an S2S stream to each partner
  --only ID...        diagnose: only these checks (or groups: edge, dns, cert, partner):
                      config fqdn.hostname cert.names cert.expiry listen dns.hosted-srv
                      dns.partner-srv partner.reachable partner.stream edge.resolve
                      edge.reachable edge.mtls edge.allowed edge.federation-port live

Signals (run): SIGTERM or SIGINT stop the gateway politely and exit 0;
SIGHUP re-reads and checks the configuration file and applies it when it has no
error (one log line says what changed and what needs a restart); with errors
xsgw keeps running on the old one and logs each error.

Exit status: 0 success, 1 configuration or runtime failure (diagnose: a check
failed), 2 bad command line.
The environment variable RUST_LOG overrides [log] level (e.g. RUST_LOG=debug).
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run {
        config: PathBuf,
        pidfile: Option<PathBuf>,
    },
    Check {
        config: PathBuf,
    },
    Reload {
        config: PathBuf,
        pidfile: PathBuf,
    },
    Diagnose(crate::ops::diagnose::Options),
    Status {
        config: PathBuf,
        json: bool,
    },
    Version,
    Help,
}

pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut args = args
        .into_iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned());
    let Some(verb) = args.next() else {
        return Err("no command given".into());
    };
    let mut config = None;
    let mut pidfile = None;
    let mut json = false;
    let mut deep = false;
    let mut only: Option<Vec<String>> = None;
    let mut rest: Vec<String> = args.collect();
    let mut i = 0;
    while i < rest.len() {
        let arg = rest[i].clone();
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<PathBuf, String> {
            if let Some(v) = inline.clone() {
                return Ok(PathBuf::from(v));
            }
            i += 1;
            rest.get(i)
                .map(PathBuf::from)
                .ok_or_else(|| format!("{name} needs {what}"))
        };
        match name.as_str() {
            "-c" | "--config" => config = Some(value("a file name")?),
            "--pidfile" => pidfile = Some(value("a file name")?),
            "-h" | "--help" => return Ok(Command::Help),
            "--json" if verb == "diagnose" || verb == "status" => json = true,
            "--deep" if verb == "diagnose" => deep = true,
            "--only" if verb == "diagnose" => {
                let ids = only.get_or_insert_with(Vec::new);
                let first = ids.len();
                if let Some(v) = inline.clone() {
                    ids.extend(v.split(',').filter(|w| !w.is_empty()).map(str::to_string));
                }
                while let Some(next) = rest.get(i + 1).filter(|w| !w.starts_with('-')) {
                    ids.extend(
                        next.split(',')
                            .filter(|w| !w.is_empty())
                            .map(str::to_string),
                    );
                    i += 1;
                }
                if ids.len() == first {
                    return Err("--only needs one or more check ids".into());
                }
                if let Some(bad) = ids[first..]
                    .iter()
                    .find(|w| !crate::ops::diagnose::known_selector(w))
                {
                    return Err(format!(
                        "unknown check `{bad}`; the ids are: {}",
                        crate::ops::diagnose::IDS.join(" ")
                    ));
                }
            }
            other => return Err(format!("unexpected argument `{other}` for `{verb}`")),
        }
        i += 1;
    }
    rest.clear();
    let config = config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    match verb.as_str() {
        "run" => Ok(Command::Run { config, pidfile }),
        "reload" => Ok(Command::Reload {
            config,
            pidfile: pidfile.unwrap_or_else(|| PathBuf::from(super::reload::DEFAULT_PIDFILE)),
        }),
        "check" if pidfile.is_some() => Err("--pidfile is an option of `run` and `reload`".into()),
        "check" => Ok(Command::Check { config }),
        "diagnose" if pidfile.is_some() => {
            Err("--pidfile is an option of `run` and `reload`".into())
        }
        "diagnose" => Ok(Command::Diagnose(crate::ops::diagnose::Options {
            config,
            json,
            only: only.unwrap_or_default(),
            deep,
        })),
        "status" if pidfile.is_some() => Err("--pidfile is an option of `run`".into()),
        "status" => Ok(Command::Status { config, json }),
        "version" | "--version" | "-V" => Ok(Command::Version),
        "help" | "--help" | "-h" => Ok(Command::Help),
        other => Err(format!("unknown command `{other}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_words(words: &str) -> Result<Command, String> {
        parse(words.split_whitespace().map(OsString::from))
    }

    #[test]
    fn commands() {
        assert_eq!(
            parse_words("xsgw run -c /tmp/x.ini --pidfile /run/xsgw.pid"),
            Ok(Command::Run {
                config: "/tmp/x.ini".into(),
                pidfile: Some("/run/xsgw.pid".into())
            })
        );
        assert_eq!(
            parse_words("xsgw check --config=/tmp/y.ini"),
            Ok(Command::Check {
                config: "/tmp/y.ini".into()
            })
        );
        assert_eq!(
            parse_words("xsgw check"),
            Ok(Command::Check {
                config: DEFAULT_CONFIG.into()
            })
        );
        assert_eq!(
            parse_words("xsgw diagnose -c /tmp/z.ini --json --only edge dns.hosted-srv --deep"),
            Ok(Command::Diagnose(crate::ops::diagnose::Options {
                config: "/tmp/z.ini".into(),
                json: true,
                only: vec!["edge".into(), "dns.hosted-srv".into()],
                deep: true,
            }))
        );
        assert_eq!(
            parse_words("xsgw diagnose --only=live,config"),
            Ok(Command::Diagnose(crate::ops::diagnose::Options {
                config: DEFAULT_CONFIG.into(),
                json: false,
                only: vec!["live".into(), "config".into()],
                deep: false,
            }))
        );
        assert_eq!(
            parse_words("xsgw status -c /tmp/s.ini --json"),
            Ok(Command::Status {
                config: "/tmp/s.ini".into(),
                json: true
            })
        );
        assert_eq!(
            parse_words("xsgw status"),
            Ok(Command::Status {
                config: DEFAULT_CONFIG.into(),
                json: false
            })
        );
        assert!(parse_words("xsgw status --deep").is_err());
        assert_eq!(
            parse_words("xsgw reload"),
            Ok(Command::Reload {
                config: DEFAULT_CONFIG.into(),
                pidfile: "/run/xsgw/xsgw.pid".into()
            })
        );
        assert_eq!(
            parse_words("xsgw reload -c /tmp/x.ini --pidfile /tmp/x.pid"),
            Ok(Command::Reload {
                config: "/tmp/x.ini".into(),
                pidfile: "/tmp/x.pid".into()
            })
        );
        assert_eq!(parse_words("xsgw version"), Ok(Command::Version));
        assert_eq!(parse_words("xsgw --version"), Ok(Command::Version));
        assert_eq!(parse_words("xsgw help"), Ok(Command::Help));
        assert_eq!(parse_words("xsgw run --help"), Ok(Command::Help));
    }

    #[test]
    fn mistakes_are_explained() {
        assert!(parse_words("xsgw").unwrap_err().contains("no command"));
        assert!(parse_words("xsgw start")
            .unwrap_err()
            .contains("unknown command"));
        assert!(parse_words("xsgw run -c")
            .unwrap_err()
            .contains("needs a file"));
        assert!(parse_words("xsgw run --verbose")
            .unwrap_err()
            .contains("--verbose"));
        assert!(parse_words("xsgw check --pidfile x").is_err());
        assert!(parse_words("xsgw check --json").is_err());
        assert!(parse_words("xsgw diagnose --only")
            .unwrap_err()
            .contains("needs one or more"));
        let unknown = parse_words("xsgw diagnose --only edge.tls").unwrap_err();
        assert!(unknown.contains("edge.tls") && unknown.contains("edge.mtls"));
    }
}
