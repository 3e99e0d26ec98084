//! Answers to application requests that passed the base protocol's checks.
//!
//! Credit control itself (RFC 4006 sessions against the ledger) is not part of this build: a
//! CCR is answered DIAMETER_UNABLE_TO_COMPLY (5012) with an Error-Message saying so, so a
//! gateway fails over to another OCS instead of waiting.

use crate::diameter::base::LocalIdentity;
use crate::diameter::codes::ResultCode;
use crate::diameter::error::DiameterError;
use crate::diameter::message::Message;

pub fn answer(identity: &LocalIdentity, out: &mut bytes::BytesMut, request: &Message) {
    let e = DiameterError::new(
        ResultCode::UnableToComply,
        "credit control is not enabled on this server",
    );
    identity.write_error_answer(out, request, &e);
}
