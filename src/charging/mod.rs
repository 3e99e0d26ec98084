//! Credit control (RFC 4006 / RFC 8506 with 3GPP TS 32.299 Gy): CCRs become ledger
//! reservations and commits, answered with grants, thresholds and Final-Unit-Indications.

pub mod answer;
pub mod changes;
pub mod engine;
pub mod provisioning;
pub mod recorder;
pub mod request;
pub mod session;
pub mod snapshot;
pub mod tenant;
pub mod views;

pub use engine::{CcrBatch, ChargingConfig, Engine};
