//! Any bytes as the store's files: journal records (both versions), change-log records and
//! their JSON, a snapshot. Reading must never panic, and whatever reads back must round-trip:
//! a journal record re-encodes to its own octets, a change-log record re-frames to its own
//! octets, and a change decoded from its JSON encodes and decodes to the same change.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ocf_charging::ledger::Ledger;
use ocf_charging::ops::Op;
use ocf_charging::engine::session;
use ocf_charging::accounts::tenant::Directory;
use ocf_store::record::{self, Next};
use ocf_store::{change_record, changes, snapshot};

/// A small tree for snapshots to land on.
const TREE: &str = "[[tenant]]\nname = \"t\"\nlimits = [{ unit = \"octets\", amount = \"1 GiB\" }]\n[[tenant.node]]\npath = \"t/d\"\nmsisdn = \"15550000001\"\n";

fuzz_target!(|data: &[u8]| {
    for version in [1, 2] {
        let mut buf = data;
        while let Next::Record(r, n) = record::next(buf, version) {
            if version == record::VERSION {
                let mut again = Vec::new();
                r.encode(&mut again);
                assert_eq!(again, &buf[..n], "journal record {r:?}");
            }
            if let Op::Session(state) = &r.op {
                let _ = session::decode_state(state);
            }
            buf = &buf[n..];
        }
    }

    let (records, used) = changes::parse_records(data);
    let framed: Vec<u8> = records.iter().flat_map(|r| r.frame()).collect();
    assert_eq!(framed, &data[..used], "change-log records");
    for r in &records {
        if let Ok(change) = change_record::decode(&r.change) {
            let json = change_record::encode(&change);
            assert_eq!(change_record::decode(&json).as_ref(), Ok(&change));
        }
    }
    if let Ok(change) = change_record::decode(data) {
        let json = change_record::encode(&change);
        assert_eq!(change_record::decode(&json).as_ref(), Ok(&change));
    }

    let file = Path::new("snapshot");
    if let Ok(header) = snapshot::header(data, file) {
        let mut ledger = Ledger::new();
        let mut dir = Directory::default();
        if ocf_charging::accounts::provisioning::load_str("t.toml", TREE, &mut ledger, &mut dir).is_ok() {
            let _ = snapshot::apply(&ledger, header, file, false, |_| {});
        }
    }
});
