//! Answers to application requests that passed the base protocol's checks: credit control
//! goes to the charging engine; anything else in application 4 is 3001.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::charging::Engine;
use crate::diameter::base::LocalIdentity;
use crate::diameter::codes::{ResultCode, application, command};
use crate::diameter::error::DiameterError;
use crate::diameter::message::Message;

/// Unix seconds now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Answers one application request; returns the journal sequence the answer must wait for
/// (0: none).
pub fn answer(
    engine: &Engine,
    identity: &LocalIdentity,
    out: &mut bytes::BytesMut,
    request: &Message,
) -> u64 {
    let h = &request.header;
    if h.application_id == application::CREDIT_CONTROL && h.command_code == command::CREDIT_CONTROL
    {
        engine.credit_control(identity, request, unix_now(), out)
    } else {
        let e = DiameterError::new(
            ResultCode::CommandUnsupported,
            "command is not supported in this application",
        );
        identity.write_error_answer(out, request, &e);
        0
    }
}
