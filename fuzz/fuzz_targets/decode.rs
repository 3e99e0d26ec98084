//! Any bytes: frame check, decode, validate against the dictionaries and dump must not panic,
//! and whatever decodes must round-trip: re-encoding gives the input with its padding zeroed,
//! and decoding that again gives the same message.
#![no_main]

use std::sync::LazyLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ocf_protocol::avp::padded;
use ocf_protocol::dictionary::Dictionary;
use ocf_protocol::header::HEADER_LEN;
use ocf_protocol::{Message, dump, frame};

static DICT: LazyLock<Dictionary> = LazyLock::new(|| Dictionary::builtin().expect("built-in dictionaries"));

fuzz_target!(|data: &[u8]| {
    let _ = dump::render(&DICT, data);
    let Ok(Some(len)) = frame::check(data, 1 << 20) else { return };
    if data.len() < len {
        return;
    }
    let frame = Bytes::copy_from_slice(&data[..len]);
    let Ok(msg) = Message::decode(frame.clone()) else { return };
    let _ = DICT.validate(&msg);
    for avp in msg.avps() {
        let _ = avp.decode_children();
    }

    let encoded = msg.to_bytes();
    assert_eq!(encoded.len(), frame.len(), "re-encoded length differs");
    // The input with the padding after each top-level AVP set to zero.
    let mut canonical = frame.to_vec();
    let mut at = HEADER_LEN;
    for avp in msg.avps() {
        let end = at + avp.wire_len();
        let padded_end = (at + padded(avp.wire_len())).min(canonical.len());
        canonical[end.min(padded_end)..padded_end].fill(0);
        at = padded_end;
    }
    assert_eq!(&encoded[..], &canonical[..], "decode then encode changed the bytes");
    let again = Message::decode(encoded.clone()).expect("re-encoded message decodes");
    assert_eq!(again, msg);
    assert_eq!(again.to_bytes(), encoded);
});
