//! ocfd nodes over NATS JetStream (issue 17, in progress): which partition a tenant is in and
//! who owns it ([`lease`]), when an owner may grant ([`ownership`]), each partition's
//! replicated log ([`log`]), an owner's [`replicator`] of its journal and changes into it, and a
//! [`node`]'s life: standby (a copy of each partition kept from its log), takeover, owner;
//! the node table ([`status`]) and the subscription ids managers add, shared for routing
//! ([`directory`]); each partition's latest snapshot, so that its log can be cut
//! ([`snapshots`]); the admin API's named tokens, shared ([`tokens`]); partitions spread over
//! the nodes ([`balance`]).

pub mod balance;
pub mod directory;
mod keys;
pub mod lease;
pub mod log;
pub mod node;
pub mod ownership;
pub mod replicator;
pub mod snapshots;
pub mod status;
pub mod tokens;
