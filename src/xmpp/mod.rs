//! XMPP server-to-server: XML streams, stanzas, dialback (RFC 6120, XEP-0220, XEP-0185).
