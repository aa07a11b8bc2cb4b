//! The `xsgw` binary: only dispatches the command line (see `xsgw::ops`).

fn main() {
    std::process::exit(xsgw::ops::main(std::env::args_os()));
}
