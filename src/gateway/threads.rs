//! Spawning named threads whose panics end only themselves.
//!
//! The release profile keeps `panic = "unwind"` so that a bug met by one connection ends that
//! connection: [`spawn`] catches the unwind at the thread boundary and logs it at error level,
//! and every other thread keeps running.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread::{Builder, JoinHandle};

/// Stack for connection threads: small, so that 10k idle streams stay cheap. Parsers and
/// state machines keep their buffers on the heap.
pub const CONNECTION_STACK: usize = 256 * 1024;
/// Stack for the router, listeners and other long-lived threads.
pub const SERVICE_STACK: usize = 1024 * 1024;

/// Spawns `body` on a thread called `name` with `stack` bytes of stack. A panic inside is
/// caught, logged with the thread's name, and turned into `Err(())` for whoever joins.
pub fn spawn<F>(name: String, stack: usize, body: F) -> std::io::Result<JoinHandle<Result<(), ()>>>
where
    F: FnOnce() + Send + 'static,
{
    let thread_name = name.clone();
    Builder::new()
        .name(name)
        .stack_size(stack)
        .spawn(move || match catch_unwind(AssertUnwindSafe(body)) {
            Ok(()) => Ok(()),
            Err(payload) => {
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-text panic payload".into());
                log::error!(
                    "thread {thread_name} stopped by a bug ({what}); its connection is closed, others continue"
                );
                Err(())
            }
        })
}

/// Replaces the default panic message on stderr by a log line with location, so panics reach
/// the same place as everything else (journal or log file) in one line.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        log::error!("panic in thread {name} at {location}: {message}");
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_thread_ends_alone() {
        let (tx, rx) = crossbeam_channel::bounded::<u32>(1);
        let survivor = spawn("survivor".into(), CONNECTION_STACK, move || {
            let n = rx.recv().unwrap();
            assert_eq!(n, 7);
        })
        .unwrap();
        let crasher = spawn("crasher".into(), CONNECTION_STACK, || {
            let v: Vec<u8> = Vec::new();
            let _ = v[3]; // a bug: out of bounds
        })
        .unwrap();
        assert_eq!(crasher.join().unwrap(), Err(()));
        tx.send(7).unwrap();
        assert_eq!(survivor.join().unwrap(), Ok(()));
    }
}
