//! Moving bytes: TCP (with TCP_NODELAY, several listen addresses, IPv4 and IPv6) and SCTP
//! (one-to-one sockets, multi-homed, PPID 46), TLS over TCP (rustls, mutual authentication).
//! The only `unsafe` of the crate lives in `sctp`.

pub mod expiry;
pub mod sctp;
pub mod tcp;
pub mod tls;
