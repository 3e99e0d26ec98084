//! Diameter base protocol (RFC 6733): message header, AVPs, data formats, dictionaries, errors
//! and the peer state machine. Nothing here does I/O or reads the clock.

pub mod avp;
pub mod base;
pub mod codes;
pub mod dictionary;
pub mod doic;
pub mod dump;
pub mod encode;
pub mod error;
pub mod frame;
pub mod header;
pub mod message;
pub mod peer;
pub mod types;

pub use avp::{Avp, AvpFlags};
pub use codes::{AvpCode, ResultCode};
pub use encode::MessageWriter;
pub use error::DiameterError;
pub use header::{CommandFlags, Header};
pub use message::Message;
