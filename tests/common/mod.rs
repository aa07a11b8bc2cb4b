//! Shared helpers for integration tests: temporary directories, a throwaway PKI made with the
//! openssl command, configuration files, and running the built `xsgw` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// The binary under test, built by cargo for integration tests.
pub fn xsgw() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xsgw"))
}

pub fn run_xsgw(args: &[&str]) -> Output {
    xsgw().args(args).output().expect("xsgw runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("xsgw-it-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl command is installed (make test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA in `dir` that issues EC P-256 certificates.
pub struct Ca {
    pub dir: PathBuf,
    pub name: String,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
                "-days",
                "3650",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Ca {
            dir: dir.to_path_buf(),
            name: name.to_string(),
        }
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join(format!("{}.pem", self.name))
    }

    /// Issues `file.pem`/`file.key` with subject CN `cn` and the DNS SANs given.
    pub fn issue(&self, file: &str, cn: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        let ext = self.dir.join(format!("{file}.ext"));
        let mut text = String::from(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
        );
        if !sans.is_empty() {
            let list: Vec<String> = sans.iter().map(|s| format!("DNS:{s}")).collect();
            text.push_str(&format!("subjectAltName={}\n", list.join(",")));
        }
        std::fs::write(&ext, text).unwrap();
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{file}.key"),
                "-out",
                &format!("{file}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{file}.csr"),
                "-CA",
                &format!("{}.pem", self.name),
                "-CAkey",
                &format!("{}.key", self.name),
                "-CAcreateserial",
                "-days",
                "825",
                "-extfile",
                &format!("{file}.ext"),
                "-out",
                &format!("{file}.pem"),
            ],
        );
        (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
        )
    }
}

/// The certificates of the standard test deployment, in one directory.
pub struct Pki {
    pub dir: TempDir,
    pub ca: Ca,
    pub other_ca: Ca,
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let dir = TempDir::new(tag);
        let ca = Ca::new(&dir.0, "internal-ca");
        let other_ca = Ca::new(&dir.0, "other-ca");
        ca.issue("gateway", "gw.contoso.test", &["gw.contoso.test"]);
        ca.issue("edge", "sip.contoso.test", &["sip.contoso.test"]);
        ca.issue(
            "xmpp",
            "contoso.test",
            &["contoso.test", "fabrikam.test", "xmpp.contoso.test"],
        );
        ca.issue("rogue", "rogue.contoso.test", &["rogue.contoso.test"]);
        other_ca.issue("impostor", "sip.contoso.test", &["sip.contoso.test"]);
        Pki { dir, ca, other_ca }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path(name).display().to_string()
    }

    /// A complete configuration for this PKI, listening on the given addresses.
    pub fn config(&self, xmpp_listen: &str, sip_listen: &str, edge: &str) -> String {
        format!(
            "[gateway]
fqdn = gw.contoso.test
sip_domains = contoso.test, fabrikam.test
state_dir = {state}

[xmpp]
listen = {xmpp_listen}
public_name = xmpp.contoso.test
cert = {xmpp_cert}
key = {xmpp_key}
ca = {ca}
dialback_secret = {state}/dialback.secret
stream_timeout = 3s

[sip]
listen = {sip_listen}
edge = {edge}
edge_names = sip.contoso.test
cert = {gw_cert}
key = {gw_key}
ca = {ca}
connect_timeout = 3s

[partner gmail.test]
aliases = googlemail.test

[log]
level = debug
",
            state = self.path("state"),
            xmpp_cert = self.path("xmpp.pem"),
            xmpp_key = self.path("xmpp.key"),
            gw_cert = self.path("gateway.pem"),
            gw_key = self.path("gateway.key"),
            ca = self.path("internal-ca.pem"),
        )
    }

    pub fn write_config(&self, name: &str, text: &str) -> String {
        let path = self.dir.path(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

/// A loopback TCP port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
pub mod attack;
pub mod peers;
pub mod process;
pub mod testbed;
