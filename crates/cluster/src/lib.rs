//! ocfd nodes over NATS JetStream (issue 17, in progress): which partition a tenant is in and
//! who owns it ([`lease`]), when an owner may grant ([`ownership`]), and each partition's
//! replicated log ([`log`]). The daemon does not use it yet.

pub mod lease;
pub mod log;
pub mod ownership;
