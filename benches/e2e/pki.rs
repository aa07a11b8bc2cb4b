//! The bench's throwaway PKI, made at run time with the openssl command (as `tests/common/`
//! does): one CA that issued every certificate of the run, EC P-256 keys.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What the run needs, by file name in the run's directory.
pub struct Pki {
    pub dir: PathBuf,
}

/// The names the certificates carry.
pub const GATEWAY_FQDN: &str = "gw.bench.test";
pub const HOSTED: &str = "contoso.test";
pub const EDGE_NAME: &str = "sip.bench.test";
pub const PARTNER: &str = "partner.bench.test";
/// Idle streams come from `i<n>.idle.bench.test`, all covered by one wildcard certificate.
pub const IDLE_SUFFIX: &str = "idle.bench.test";

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(|e| format!("the openssl command is needed to make certificates: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Pki {
    /// A CA and the certificates of the gateway (SIP and XMPP), the Edge, the partner and
    /// the idle domains, in `dir`.
    pub fn create(dir: &Path) -> Result<Pki, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
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
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "825",
                "-subj",
                "/CN=xsgw bench CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        )?;
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        pki.issue("gateway", &[GATEWAY_FQDN])?;
        pki.issue("xmpp", &[HOSTED, GATEWAY_FQDN])?;
        pki.issue("edge", &[EDGE_NAME])?;
        pki.issue("partner", &[PARTNER])?;
        pki.issue("idle", &[&format!("*.{IDLE_SUFFIX}")])?;
        Ok(pki)
    }

    fn issue(&self, file: &str, sans: &[&str]) -> Result<(), String> {
        let list: Vec<String> = sans.iter().map(|s| format!("DNS:{s}")).collect();
        std::fs::write(
            self.dir.join(format!("{file}.ext")),
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
                 extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={}\n",
                list.join(",")
            ),
        )
        .map_err(|e| e.to_string())?;
        let (key, csr, pem, ext) = (
            format!("{file}.key"),
            format!("{file}.csr"),
            format!("{file}.pem"),
            format!("{file}.ext"),
        );
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
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={}", sans[0]),
            ],
        )?;
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "825",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ],
        )
    }

    /// `name.pem` or `name.key` in the run's directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}
