//! SIP toward the Access Edge: messages, framing, transactions, dialogs (RFC 3261).
