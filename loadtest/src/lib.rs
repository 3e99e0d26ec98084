//! ocf-loadtest: a Diameter Gy load generator and test client for ocfd or any other charging
//! server. It uses only the `diameter` layer of the `ocf` library: the codec and the initiator
//! side of the peer state machine.
//!
//! - [`client`]: one connection (TCP or SCTP) with CER/CEA, watchdogs answered, DPR on exit.
//! - [`gy`]: CCRs built field by field and CCAs read back, for tests.
//! - [`plan`], [`load`], [`stats`]: sessions and events at an open-loop rate or with a
//!   closed-loop window over many connections, timed into HDR histograms.
//! - [`reacting`]: DOIC (RFC 7683) as a reacting node: overload reports kept, requests abated.
//! - [`responder`]: a do-nothing Gy server for measuring the generator's own ceiling.

pub mod client;
pub mod gy;
pub mod load;
pub mod plan;
pub mod reacting;
pub mod responder;
pub mod stats;
