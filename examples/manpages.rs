//! Writes the manual pages `xsgw.8` and `xsgw.ini.5` into the directory given as the only
//! argument (used by `make deb`). The text comes from `xsgw::ops::man`, generated from the
//! command line's usage and the configuration key table.

use std::path::PathBuf;

fn main() {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: manpages DIR");
        std::process::exit(2);
    };
    let version = env!("CARGO_PKG_VERSION");
    for (name, text) in [
        ("xsgw.8", xsgw::ops::man::xsgw_8(version)),
        ("xsgw.ini.5", xsgw::ops::man::xsgw_ini_5(version)),
    ] {
        let path = dir.join(name);
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
    }
}
