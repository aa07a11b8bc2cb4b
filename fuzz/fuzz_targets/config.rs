//! The configuration file: the INI reader (`config::ini::parse`) and stage 1 of the
//! configuration (`config::parse`: key table, types, values), as `xsgw check` and `xsgw run`
//! read `/etc/xsgw/xsgw.ini`. Stage 2 reads certificates from disk and is left out.
//!
//! Invariants: no panic; every error names a line of the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use xsgw::config::{ini, parse};

fuzz_target!(|data: &[u8]| {
    if data.len() > ini::MAX_FILE_LEN {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.lines().count();
    let (sections, errors) = ini::parse(text);
    for e in &errors {
        assert!(
            e.line >= 1 && e.line <= lines,
            "error on line {} of {lines}",
            e.line
        );
    }
    for s in &sections {
        assert!(s.line >= 1 && s.line <= lines);
        for entry in &s.entries {
            assert!(entry.line > s.line && entry.line <= lines);
        }
    }
    let _ = parse(text, Path::new("fuzz.ini"));
});
