//! Log set-up: one line per event with timestamp, level and thread (the thread name carries
//! the connection: `xmpp-in-17`, `sip-in-3`, `router`). Colour only on a terminal.

use std::io::Write;

/// Starts logging at `level`, unless RUST_LOG says otherwise. Safe to call more than once.
pub fn init(level: log::LevelFilter) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.write_style(env_logger::WriteStyle::Auto);
    builder.format(|buf, record| {
        let thread = std::thread::current();
        let style = buf.default_level_style(record.level());
        // A line that shows a peer's string without `logsafe::escaped` still cannot carry a
        // raw CR/LF or terminal escape: the whole line is escaped once more here.
        let line = record.args().to_string();
        writeln!(
            buf,
            "{} {style}{:<5}{style:#} [{}] {}",
            buf.timestamp_millis(),
            record.level(),
            thread.name().unwrap_or("-"),
            crate::logsafe::escape_line(&line)
        )
    });
    let _ = builder.try_init();
}
