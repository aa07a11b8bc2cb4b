//! Listener threads: accept, enforce the connection limit, hand each socket to its own thread.
//! Nothing slow happens here: TLS and stream set-up run in the connection thread.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::connection::{self, Context};
use super::{threads, ConnectionCount, RunError, Side};

pub fn bind(addr: SocketAddr, key: &'static str) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr).map_err(|error| RunError::Bind { key, addr, error })
}

pub fn accept_loop(
    side: Side,
    listener: TcpListener,
    max: usize,
    context: &Arc<Context>,
    stopping: &Arc<AtomicBool>,
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
        let id = super::router::next_connection_id();
        let name = format!("{side}-in-{id}");
        let context = Arc::clone(context);
        let stopping = Arc::clone(stopping);
        let threads = Arc::clone(&context.threads);
        match threads::spawn(name.clone(), threads::CONNECTION_STACK, move || {
            connection::serve_inbound(side, id, stream, peer, slot, &context, &stopping)
        }) {
            Ok(handle) => threads.add(handle),
            Err(error) => {
                log::error!("{side} inbound from {peer} dropped: cannot start {name}: {error}")
            }
        }
    }
    log::info!(
        "{side} listener on {:?} stopped",
        listener.local_addr().ok()
    );
}
