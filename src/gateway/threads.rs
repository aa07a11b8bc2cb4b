//! Spawning named threads: connection threads whose panics end only themselves, and service
//! threads whose panics end the process.
//!
//! The release profile keeps `panic = "unwind"` so that a bug met by one connection ends that
//! connection: [`spawn`] catches the unwind at the thread boundary and logs it at error level,
//! and every other thread keeps running.
//!
//! A service thread (router, listeners, state writer, the Edge connection owner, signals) is
//! different: without it the gateway is a silent outage (listeners accepting into a router
//! that is gone). [`spawn_service`] turns its panic into the process's exit with
//! [`EXIT_BUG`] and one log line naming the thread, so systemd (`Restart=on-failure`) or the
//! init script's supervisor starts xsgw again, and subscriptions come back from `state_dir`
//! as after `kill -9`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use std::thread::{Builder, JoinHandle};
use std::time::{Duration, Instant};

/// Stack for connection threads: small, so that 10k idle streams stay cheap. Parsers and
/// state machines keep their buffers on the heap.
pub const CONNECTION_STACK: usize = 256 * 1024;
/// Stack for the router, listeners and other long-lived threads.
pub const SERVICE_STACK: usize = 1024 * 1024;

/// Exit status of a process ended by a bug in a service thread (`EX_SOFTWARE`, sysexits.h):
/// not 0 (a supervisor restarts it) and not 1 (a configuration problem, not worth a restart).
pub const EXIT_BUG: i32 = 70;

/// Spawns `body` on a thread called `name` with `stack` bytes of stack. A panic inside is
/// caught, logged with the thread's name, and turned into `Err(())` for whoever joins.
pub fn spawn<F>(name: String, stack: usize, body: F) -> std::io::Result<JoinHandle<Result<(), ()>>>
where
    F: FnOnce() + Send + 'static,
{
    spawn_catching(name, stack, body, |thread, what| {
        log::error!(
            "thread {thread} stopped by a bug ({what}); its connection is closed, others continue"
        );
    })
}

/// Spawns a service thread: like [`spawn`], but a panic ends the whole process with
/// [`EXIT_BUG`] after one log line naming the thread. Service threads hold state no other
/// thread can rebuild, so going on without them would be a silent outage.
pub fn spawn_service<F>(
    name: String,
    stack: usize,
    body: F,
) -> std::io::Result<JoinHandle<Result<(), ()>>>
where
    F: FnOnce() + Send + 'static,
{
    spawn_catching(name, stack, body, |thread, what| {
        log::error!(
            "service thread {thread} stopped by a bug ({what}); xsgw exits with status {EXIT_BUG} so that its supervisor restarts it"
        );
        std::process::exit(EXIT_BUG)
    })
}

/// The thread boundary both kinds share: `on_panic` gets the thread's name and the panic's
/// text once the unwind is caught.
fn spawn_catching<F>(
    name: String,
    stack: usize,
    body: F,
    on_panic: fn(&str, &str),
) -> std::io::Result<JoinHandle<Result<(), ()>>>
where
    F: FnOnce() + Send + 'static,
{
    let thread_name = name.clone();
    Builder::new().name(name).stack_size(stack).spawn(move || {
        match catch_unwind(AssertUnwindSafe(body)) {
            Ok(()) => Ok(()),
            Err(payload) => {
                on_panic(&thread_name, &panic_text(payload.as_ref()));
                Err(())
            }
        }
    })
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".into())
}

/// In debug builds only (the integration tests' binary), `XSGW_TEST_PANIC=<thread name>` makes
/// that service thread panic where it calls this, so a test can prove the process then exits.
/// Release builds compile it to nothing.
pub fn test_panic_point(thread: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("XSGW_TEST_PANIC").is_ok_and(|v| v == thread) {
        panic!("XSGW_TEST_PANIC={thread}: injected by a test");
    }
    #[cfg(not(debug_assertions))]
    let _ = thread;
}

/// The connection and outbound threads a gateway started, so [`ThreadSet::join_all`] can prove
/// at shutdown that every one of them ended. Finished threads are joined (and forgotten) as
/// new ones are added, so the set stays as large as the live threads, not the history.
#[derive(Debug, Default)]
pub struct ThreadSet {
    inner: Mutex<Threads>,
}

#[derive(Debug, Default)]
struct Threads {
    handles: Vec<JoinHandle<Result<(), ()>>>,
    /// Ended by a bug (joined while pruning).
    failed: usize,
    /// Prune when the set reaches this size (doubles with the live count: amortised O(1)).
    prune_at: usize,
}

impl ThreadSet {
    /// Keeps `handle` for [`ThreadSet::join_all`].
    pub fn add(&self, handle: JoinHandle<Result<(), ()>>) {
        let Ok(mut threads) = self.inner.lock() else {
            return;
        };
        threads.handles.push(handle);
        if threads.handles.len() >= threads.prune_at.max(64) {
            let (done, live): (Vec<_>, Vec<_>) = std::mem::take(&mut threads.handles)
                .into_iter()
                .partition(|h| h.is_finished());
            threads.handles = live;
            threads.failed += done
                .into_iter()
                .map(JoinHandle::join)
                .filter(|r| !matches!(r, Ok(Ok(()))))
                .count();
            threads.prune_at = threads.handles.len() * 2;
        }
    }

    /// Joins every thread in the set, waiting for them until `deadline`. `false` when one
    /// ended by a bug or is still running at the deadline (it is named in the log and left).
    pub fn join_all(&self, deadline: Instant) -> bool {
        let Ok(mut threads) = self.inner.lock() else {
            return false;
        };
        let mut clean = threads.failed == 0;
        for handle in std::mem::take(&mut threads.handles) {
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if handle.is_finished() {
                clean &= matches!(handle.join(), Ok(Ok(())));
            } else {
                log::warn!(
                    "thread {} did not end by the shutdown deadline; leaving it",
                    handle.thread().name().unwrap_or("unnamed")
                );
                clean = false;
            }
        }
        clean
    }
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

    #[test]
    fn a_thread_set_joins_every_thread_and_names_the_late_one() {
        let set = ThreadSet::default();
        for i in 0..63 {
            set.add(spawn(format!("quick-{i}"), CONNECTION_STACK, || {}).unwrap());
        }
        std::thread::sleep(Duration::from_millis(300));
        set.add(spawn("quick-last".into(), CONNECTION_STACK, || {}).unwrap());
        assert!(
            set.inner.lock().unwrap().handles.len() <= 1,
            "finished ones pruned"
        );
        assert!(set.join_all(Instant::now() + Duration::from_secs(5)));
        let (tx, rx) = crossbeam_channel::bounded::<()>(0);
        set.add(
            spawn("slow".into(), CONNECTION_STACK, move || {
                let _ = rx.recv();
            })
            .unwrap(),
        );
        assert!(!set.join_all(Instant::now() + Duration::from_millis(50)));
        drop(tx);
    }
}
