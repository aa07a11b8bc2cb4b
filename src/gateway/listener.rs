//! Listener threads: accept, enforce the connection limit, hand each socket to its own thread.
//! Nothing slow happens here: TLS and stream set-up run in the connection thread.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::connection::{self, Context};
use super::{threads, ConnectionCount, RunError, Side};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub fn bind(addr: SocketAddr, key: &'static str) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr).map_err(|error| RunError::Bind { key, addr, error })
}

pub fn accept_loop(
    side: Side,
    listener: TcpListener,
    max: usize,
    context: &Arc<Context>,
    stopping: &AtomicBool,
) {
    let count = Arc::new(ConnectionCount::default());
    loop {
        let accepted = listener.accept();
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // EMFILE and friends: log and go on; the next accept may succeed.
                log::warn!("{side}: accept failed: {error}");
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
        };
        let Some(slot) = count.try_acquire(max) else {
            log::warn!(
                "{side} inbound from {peer} refused: {max} connections already open (limit reached)"
            );
            connection::refuse_over_limit(side, stream);
            continue;
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("{side}-in-{id}");
        let context = Arc::clone(context);
        if let Err(error) = threads::spawn(name.clone(), threads::CONNECTION_STACK, move || {
            connection::serve_inbound(side, id, stream, peer, slot, &context)
        }) {
            log::error!("{side} inbound from {peer} dropped: cannot start {name}: {error}");
        }
    }
    log::info!(
        "{side} listener on {:?} stopped",
        listener.local_addr().ok()
    );
}
