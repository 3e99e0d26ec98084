//! The charging core of ocfd (DESIGN.md §3, §5): the ledger of hierarchical shared quotas, the
//! accounts (tree model, provisioning, changes, views) and the RFC 4006 credit-control engine
//! (RFC 8506, 3GPP TS 32.299 Gy): CCRs become ledger reservations and commits, answered with
//! grants, thresholds and Final-Unit-Indications.
//!
//! Sans-IO: no runtime, no threads, no files, no clock. Every call takes `now` (Unix seconds)
//! and returns what must be persisted ([`ops::Op`]); the store writes it.

pub mod accounts;
pub mod engine;
mod le;
pub mod ledger;
pub mod ops;
pub mod rules;
pub mod terms;

pub use engine::{CcrBatch, ChargingConfig, Engine};
