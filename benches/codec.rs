//! Codec speed: decode a CCR-Update with three Multiple-Services-Credit-Control AVPs (as a PGW
//! sends it), walk every MSCC's children, and re-encode it; also dictionary validation and
//! writing the CCA-shaped answer. Figures go to docs/benchmarks.md.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, criterion_group, criterion_main};
use ocf_protocol::codes::avp as c;
use ocf_protocol::dictionary::Dictionary;
use ocf_protocol::{Header, Message, MessageWriter};

/// A CCR-Update with three MSCCs, each reporting usage and asking for more.
pub fn ccr_update() -> Bytes {
    let mut b = BytesMut::new();
    let mut w = MessageWriter::new(&mut b, &Header::request(272, 4, 0x1234, 0x5678));
    w.utf8(
        c::SESSION_ID,
        "pgw1.operator.net;1700000000;42;imsi-001010000000042",
    );
    w.identity(c::ORIGIN_HOST, "pgw1.operator.net");
    w.identity(c::ORIGIN_REALM, "operator.net");
    w.identity(c::DESTINATION_REALM, "localdomain");
    w.u32(c::AUTH_APPLICATION_ID, 4);
    w.utf8(c::SERVICE_CONTEXT_ID, "32251@3gpp.org");
    w.u32(c::CC_REQUEST_TYPE, 2);
    w.u32(c::CC_REQUEST_NUMBER, 7);
    w.u32(c::EVENT_TIMESTAMP, 0xe8b2_5a00);
    for (ty, data) in [(0, "15551000042"), (1, "001010000000042")] {
        let g = w.begin_group(c::SUBSCRIPTION_ID);
        w.u32(c::SUBSCRIPTION_ID_TYPE, ty);
        w.utf8(c::SUBSCRIPTION_ID_DATA, data);
        w.end_group(g);
    }
    w.u32(c::MULTIPLE_SERVICES_INDICATOR, 1);
    for rg in [10u32, 20, 30] {
        let m = w.begin_group(c::MULTIPLE_SERVICES_CREDIT_CONTROL);
        let r = w.begin_group(c::REQUESTED_SERVICE_UNIT);
        w.end_group(r);
        let u = w.begin_group(c::USED_SERVICE_UNIT);
        w.u64(c::CC_TOTAL_OCTETS, 10 * 1024 * 1024);
        w.u64(c::CC_INPUT_OCTETS, 1024 * 1024);
        w.u64(c::CC_OUTPUT_OCTETS, 9 * 1024 * 1024);
        w.u32(c::REPORTING_REASON, 3);
        w.end_group(u);
        w.u32(c::SERVICE_IDENTIFIER, rg * 100);
        w.u32(c::RATING_GROUP, rg);
        w.end_group(m);
    }
    let si = w.begin_group(c::SERVICE_INFORMATION);
    let ps = w.begin_group(c::PS_INFORMATION);
    w.u32(c::THREEGPP_CHARGING_ID, 0x0102_0304);
    w.bytes(c::THREEGPP_RAT_TYPE, &[6]);
    w.bytes(
        c::THREEGPP_USER_LOCATION_INFO,
        &[0x82, 0, 0xf1, 0x10, 0, 1, 0, 0xf1, 0x10, 0, 0, 0, 1],
    );
    w.utf8(c::CALLED_STATION_ID, "internet");
    w.end_group(ps);
    w.end_group(si);
    w.finish();
    b.freeze()
}

/// Decodes the frame and reads every MSCC's children, as the charging layer will.
fn decode_and_walk(frame: Bytes) -> (Message, u64) {
    let msg = Message::decode(frame).expect("valid CCR");
    let mut used = 0u64;
    for mscc in msg.find_all(c::MULTIPLE_SERVICES_CREDIT_CONTROL) {
        for child in mscc.children() {
            if child.is(c::USED_SERVICE_UNIT) {
                for u in child.children() {
                    if u.is(c::CC_TOTAL_OCTETS) {
                        used += u.u64().unwrap_or(0);
                    }
                }
            }
        }
    }
    (msg, used)
}

fn bench(cr: &mut Criterion) {
    let frame = ccr_update();
    let dict = Dictionary::builtin().unwrap();
    let mut out = BytesMut::with_capacity(4096);
    cr.bench_function("ccr_update_3mscc/decode+walk+encode", |b| {
        b.iter(|| {
            let (msg, used) = decode_and_walk(black_box(frame.clone()));
            out.clear();
            msg.encode(&mut out);
            black_box((used, out.len()))
        })
    });
    cr.bench_function("ccr_update_3mscc/decode+walk", |b| {
        b.iter(|| black_box(decode_and_walk(black_box(frame.clone())).1))
    });
    let msg = Message::decode(frame.clone()).unwrap();
    cr.bench_function("ccr_update_3mscc/validate", |b| {
        b.iter(|| dict.validate(black_box(&msg)).is_ok())
    });
    assert_eq!(decode_and_walk(frame.clone()).1, 3 * 10 * 1024 * 1024);
    assert!(dict.validate(&msg).is_ok());
    assert_eq!(msg.to_bytes(), frame);
}

criterion_group!(benches, bench);
criterion_main!(benches);
