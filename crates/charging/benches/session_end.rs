//! The core alone: one data session opened and ended (CCR-I with a request, CCR-T with a
//! report), usage records on, as the engine answers them in a batch. What a session end costs
//! in the core, usage record included, with no sockets and no journal.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};
use ocf_charging::accounts::provisioning::default_tenant;
use ocf_charging::{ChargingConfig, Engine};
use ocf_loadtest::gy::{CcrSpec, INITIAL, MsccSpec, TERMINATION};
use ocf_protocol::Message;
use ocf_protocol::base::LocalIdentity;

const NOW: i64 = 1_795_000_000;

fn identity() -> LocalIdentity {
    LocalIdentity {
        origin_host: "ocfd.localdomain".into(),
        origin_realm: "localdomain".into(),
        host_ip_addresses: vec![std::net::IpAddr::from([127, 0, 0, 1])],
        vendor_id: 10415,
        product_name: "ocfd".into(),
        firmware_revision: 1,
        origin_state_id: 1,
        auth_application_ids: vec![4],
        supported_vendor_ids: vec![10415],
    }
}

fn message(spec: &CcrSpec) -> Message {
    let mut b = BytesMut::new();
    spec.write(&mut b, 1, 1);
    Message::decode(b.freeze()).expect("a CCR")
}

fn session_end(c: &mut Criterion) {
    let (ledger, directory) = default_tenant();
    let engine =
        Engine::new(ledger, directory, ChargingConfig::default()).with_usage_records(false);
    let identity = identity();
    let mut out = BytesMut::with_capacity(4096);
    let mut n = 0u64;
    c.bench_function("session I+T with a usage record", |b| {
        b.iter(|| {
            n += 1;
            let sid = format!("pgw.localdomain;bench;{n}");
            let device = format!("{}", 15_551_000_000 + n % 5000);
            let i = message(
                &CcrSpec::new(&sid, INITIAL, 0)
                    .msisdn(&device)
                    .mscc(MsccSpec::rsu(1)),
            );
            let t =
                message(&CcrSpec::new(&sid, TERMINATION, 1).mscc(MsccSpec::report(1, 1000, false)));
            out.clear();
            let mut batch = engine.batch(NOW);
            batch.credit_control(&identity, &i, &mut out);
            batch.credit_control(&identity, &t, &mut out);
            black_box(batch.finish().ops().len())
        })
    });
}

criterion_group!(benches, session_end);
criterion_main!(benches);
