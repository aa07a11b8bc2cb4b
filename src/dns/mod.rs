//! DNS for finding XMPP partners and the Edge: SRV ordering (RFC 2782) and a blocking client.
