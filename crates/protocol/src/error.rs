//! Protocol errors as RFC 6733 §7 wants them reported: a Result-Code, the offending AVP for
//! Failed-AVP, and a short Error-Message.

use std::borrow::Cow;

use bytes::Bytes;

use super::codes::ResultCode;

/// A decode or validation failure that can be answered on the wire.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{result_code:?} ({code}): {message}", code = result_code.code())]
pub struct DiameterError {
    pub result_code: ResultCode,
    /// The encoded AVP (with its padding) to carry inside Failed-AVP, if the error names one.
    pub failed_avp: Option<Bytes>,
    /// Human-readable reason, sent as Error-Message.
    pub message: Cow<'static, str>,
}

impl DiameterError {
    pub fn new(result_code: ResultCode, message: impl Into<Cow<'static, str>>) -> Self {
        DiameterError {
            result_code,
            failed_avp: None,
            message: message.into(),
        }
    }

    pub fn with_avp(mut self, failed_avp: Bytes) -> Self {
        self.failed_avp = Some(failed_avp);
        self
    }
}
