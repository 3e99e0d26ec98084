//! Answers to application requests that passed the base protocol's checks: credit control
//! goes to the charging engine, Sy to the PCRFs' subscriptions; anything else is 3001.

use ocf_charging::CcrBatch;
use ocf_protocol::base::LocalIdentity;
use ocf_protocol::codes::{ResultCode, application, command};
use ocf_protocol::error::DiameterError;
use ocf_protocol::message::Message;
use ocf_store::Store;

pub use super::clock::unix_now;

/// Answers one application request. Credit control joins `batch` (started on the first
/// request of a read), which the caller finishes once the read is answered.
pub fn answer<'e>(
    store: &'e Store,
    sy: &super::sy::Sy,
    batch: &mut Option<CcrBatch<'e>>,
    identity: &LocalIdentity,
    out: &mut bytes::BytesMut,
    request: &Message,
) {
    let h = &request.header;
    if h.application_id == application::CREDIT_CONTROL && h.command_code == command::CREDIT_CONTROL
    {
        let batch = batch.get_or_insert_with(|| store.batch(unix_now()));
        store.credit_control(batch, identity, request, out);
    } else if h.application_id == application::SY {
        sy.answer(store, identity, out, request);
    } else {
        let e = DiameterError::new(
            ResultCode::CommandUnsupported,
            "command is not supported in this application",
        );
        identity.write_error_answer(out, request, &e);
    }
}
