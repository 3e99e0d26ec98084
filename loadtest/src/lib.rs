//! ocf-loadtest: a Diameter Gy client for load and conformance testing of ocfd or any other
//! charging server. It uses only the `diameter` layer of the `ocf` library: the codec and the
//! initiator side of the peer state machine.
//!
//! At this stage it is the client the tests use: connect over TCP or SCTP, exchange
//! capabilities, send requests and read their answers (answering the server's watchdogs on the
//! way), and disconnect with DPR.

pub mod client;
pub mod gy;
