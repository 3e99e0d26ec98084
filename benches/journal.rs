//! Journal speed: replaying a million records onto the embedded tenant's ledger (start-up
//! time after a crash), and encoding records (the writer's cost per record).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ocf_charging::accounts::provisioning::default_tenant;
use ocf_store::record::{Account, Op, Record};
use ocf_store::replay::replay;
use ocf_store::segment::SegmentWriter;

const RECORDS: u64 = 1_000_000;

/// A journal of sessions on the embedded tenant: reserve, commit, in pairs.
fn write_journal(dir: &std::path::Path) {
    let mut w = SegmentWriter::open(dir, 1, 64 << 20).unwrap();
    let mut buf = Vec::with_capacity(1 << 20);
    let mut seq = 1u64;
    let mut pending = 0u64;
    while seq <= RECORDS {
        let node = 2 + (seq % 9_000) as u32;
        let account = Account { tree: 0, node };
        let op = if seq % 2 == 1 {
            Op::Reserve {
                reservation: seq,
                account,
                unit: 0,
                amount: 1 << 20,
                expires: 2_000_000_000,
            }
        } else {
            Op::Commit {
                reservation: seq - 1,
                account,
                unit: 0,
                reserved: 1 << 20,
                used: 1000,
            }
        };
        Record {
            sequence: seq,
            time: 1_795_000_000,
            op,
        }
        .encode(&mut buf);
        pending += 1;
        seq += 1;
        if buf.len() > (1 << 20) - 256 {
            w.append(&buf, pending).unwrap();
            buf.clear();
            pending = 0;
        }
    }
    w.append(&buf, pending).unwrap();
    w.sync().unwrap();
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    write_journal(dir.path());
    let mut g = c.benchmark_group("journal");
    g.sample_size(10);
    g.bench_function("replay_1M_records", |b| {
        b.iter_batched(
            || {
                let (ledger, dir) = default_tenant();
                ocf_charging::Engine::new(ledger, dir, Default::default())
            },
            |engine| {
                let r = replay(&engine, dir.path(), 0, Vec::new(), |_| {}).unwrap();
                assert_eq!(r.1.records, RECORDS);
                black_box(r.0.outstanding.len())
            },
            criterion::BatchSize::PerIteration,
        )
    });
    g.finish();
    let rec = Record {
        sequence: 1,
        time: 1,
        op: Op::Commit {
            reservation: 1,
            account: Account { tree: 0, node: 5 },
            unit: 0,
            reserved: 10,
            used: 5,
        },
    };
    let mut buf = Vec::with_capacity(4096);
    c.bench_function("journal/encode_record", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&rec).encode(&mut buf);
            black_box(buf.len())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
