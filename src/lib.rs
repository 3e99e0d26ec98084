//! ocfd: a Diameter Gy online charging function.
//!
//! Layers (see DESIGN.md §3): `diameter` is the sans-IO protocol core (codec, dictionary, peer
//! state machine); `transport` moves bytes over TCP and SCTP; `server` drives connections;
//! `config` is the strict TOML configuration; `ctl` is `ocfctl`, the admin API's client.

pub mod charging;
pub mod config;
pub mod ctl;
pub mod journal;
pub mod ledger;
pub mod server;
pub mod stats;
