//! ocfd, the daemon: the shell around the charging core (DESIGN.md §3; ARCHITECTURE.md is the
//! map). `server` drives connections, the admin API, metrics, supervision, snapshots, reload and
//! shutdown; `config` is the strict TOML configuration; `ctl` is `ocfctl`, the admin API's
//! client. The protocol, transports, charging core and store are crates of their own below it.

pub mod config;
pub mod ctl;
pub mod server;
