//! The configuration in force and the TLS configurations built from it: one published
//! snapshot ([`Live`]) that connection threads read and the router replaces on reload.
//!
//! Why a shared cell, against the house rule "one owner per piece of state": the
//! configuration has exactly one writer, the router thread, which loads and checks a new
//! file outside any lock (`config::check_file`, both stages, certificates included), builds
//! the TLS configurations, and only then publishes the finished snapshot with one pointer
//! swap under a `RwLock`. Everybody else holds an `Arc<Live>` that never changes under them:
//! a connection thread takes one when it starts (and a policy decision takes one when it is
//! made), so an established connection keeps the certificates and limits it started with.
//! Nothing is mutated in place and no lock is held while anything else happens, so the lock
//! is only ever contended for the time of an `Arc` clone; the alternative, a channel from
//! the router to every thread, would need every blocked thread to be woken to read it.
//! Hot paths do not read the cell per message: the router keeps its own copy (the S2S
//! table's, the bridge's), and threads that must notice a reload while they run (inbound and
//! outbound S2S streams, whose partner may have been removed; the listeners, whose caps may
//! have changed) compare the cell's [`ConfigCell::generation`], one atomic load, before they
//! take a new snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::config::{Config, Credentials};
use crate::tls::xmpp::XmppTls;

/// One consistent configuration and the TLS configurations made from its certificates.
pub struct Live {
    pub config: Arc<Config>,
    /// Both TLS sides of the XMPP leg; `None` when no policy allows TLS.
    pub xmpp_tls: Option<Arc<XmppTls>>,
    /// Both TLS sides of the SIP leg; `None` only in tests that run the XMPP side alone.
    pub sip_tls: Option<SipTls>,
}

/// The SIP leg's TLS: the server side for the Edge's connections to 5061, the client side
/// for ours to `[sip] edge`.
#[derive(Clone)]
pub struct SipTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
}

impl Live {
    /// The snapshot for `config` and the certificates loaded for it.
    pub fn build(config: Arc<Config>, credentials: &Credentials) -> Result<Live, rustls::Error> {
        let sip_tls = SipTls {
            server: crate::tls::sip::sip_server_config(credentials, &config.sip)?,
            client: crate::tls::sip::sip_client_config(credentials, &config.sip)?,
        };
        Ok(Live {
            xmpp_tls: XmppTls::new(credentials)?.map(Arc::new),
            sip_tls: Some(sip_tls),
            config,
        })
    }

    /// A snapshot without the SIP leg (tests of the XMPP side).
    pub fn without_sip(config: Config, xmpp_tls: Option<XmppTls>) -> Live {
        Live {
            config: Arc::new(config),
            xmpp_tls: xmpp_tls.map(Arc::new),
            sip_tls: None,
        }
    }
}

/// Holds the current [`Live`]; written by the router only.
pub struct ConfigCell {
    current: RwLock<Arc<Live>>,
    generation: AtomicU64,
}

impl ConfigCell {
    pub fn new(live: Live) -> Self {
        ConfigCell {
            current: RwLock::new(Arc::new(live)),
            generation: AtomicU64::new(0),
        }
    }

    /// The snapshot in force now (take it once per connection or decision).
    pub fn current(&self) -> Arc<Live> {
        // Nothing panics while holding the lock; a poisoned one still holds a whole Arc.
        let guard = self.current.read().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&guard)
    }

    /// The configuration in force now.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.current().config)
    }

    /// Counts publications: a thread that saw another number has a new snapshot to read.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Makes `live` the snapshot in force (the router, after checking it).
    pub fn publish(&self, live: Live) {
        let live = Arc::new(live);
        {
            let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
            *guard = live;
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// A thread's view of the cell's generation: [`Watch::changed`] is true once per
/// publication it has not seen yet.
#[derive(Debug)]
pub struct Watch(u64);

impl Watch {
    pub fn new(cell: &ConfigCell) -> Self {
        Watch(cell.generation())
    }

    /// A watch whose first [`Watch::changed`] is true whatever the generation.
    pub fn stale() -> Self {
        Watch(u64::MAX)
    }

    pub fn changed(&mut self, cell: &ConfigCell) -> bool {
        let now = cell.generation();
        std::mem::replace(&mut self.0, now) != now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(fqdn: &str) -> Config {
        let text = format!(
            "[gateway]\nfqdn = {fqdn}\nsip_domains = contoso.test\n[xmpp]\ntls = disabled\n[sip]\nedge = sip.contoso.test:5061\n"
        );
        crate::config::parse(&text, Path::new("t.ini")).unwrap().0
    }

    #[test]
    fn a_published_snapshot_is_seen_by_new_readers_and_old_ones_keep_theirs() {
        let cell = ConfigCell::new(Live::without_sip(config("gw.contoso.test"), None));
        let mut watch = Watch::new(&cell);
        let before = cell.config();
        assert!(!watch.changed(&cell));
        cell.publish(Live::without_sip(config("gw2.contoso.test"), None));
        assert!(watch.changed(&cell));
        assert!(!watch.changed(&cell), "a publication is seen once");
        assert_eq!(before.gateway.fqdn, "gw.contoso.test");
        assert_eq!(cell.config().gateway.fqdn, "gw2.contoso.test");
    }
}
