//! The operator files in etc/ are kept true to the binary: the init script is valid shell and
//! uses real commands and options, the systemd unit runs real commands with the sandbox the
//! foundation issue asks for. (etc/xsgw.ini is checked by unit and `check` tests.)

mod common;

use std::process::Command;

const INIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/etc/init.d/xsgw");
const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/etc/xsgw.service");

#[test]
fn init_script_is_valid_shell_with_every_lsb_action() {
    let status = Command::new("sh").args(["-n", INIT]).status().unwrap();
    assert!(status.success(), "sh -n etc/init.d/xsgw");
    let text = std::fs::read_to_string(INIT).unwrap();
    for action in [
        "start)",
        "stop)",
        "restart|force-reload)",
        "reload)",
        "status)",
    ] {
        assert!(text.contains(action), "init script lacks {action}");
    }
    assert!(text.contains("### BEGIN INIT INFO") && text.contains("### END INIT INFO"));
    assert!(
        text.contains("--chuid \"$USER\"") && text.contains("USER=xsgw"),
        "runs unprivileged"
    );
    assert!(text.contains("run -c '$CONFIG' --pidfile '$PIDFILE'"));
    assert!(text.contains("--signal HUP"), "reload sends SIGHUP");
}

#[test]
fn systemd_unit_runs_real_commands_in_a_sandbox() {
    let text = std::fs::read_to_string(UNIT).unwrap();
    let value = |key: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("unit lacks {key}="))
            .to_string()
    };
    for (key, expected) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("StateDirectory", "xsgw"),
        ("User", "xsgw"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ] {
        assert_eq!(value(key), expected, "{key}");
    }
    // The commands the unit runs are ones the binary accepts.
    for key in ["ExecStart", "ExecStartPre"] {
        let line = value(key);
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("/usr/local/bin/xsgw"), "{key}");
        let args: Vec<&str> = words.collect();
        let mut with_help = args.clone();
        with_help.push("--help");
        let out = common::run_xsgw(&with_help);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{key} arguments {args:?} are not understood"
        );
    }
}
