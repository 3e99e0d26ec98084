//! Persistence end to end: balances survive a clean restart and a SIGKILL; reservations open at
//! a crash stay spent until they expire; in fsync mode every acknowledged usage survives
//! repeated SIGKILLs at arbitrary points; a corrupt journal stops startup with file and offset.

mod common;

use std::time::Duration;

use common::*;
use ocf_loadtest::gy::{CcrSpec, INITIAL, MsccSpec, TERMINATION, UPDATE};

const MIB: u64 = 1024 * 1024;

fn rsu() -> MsccSpec {
    MsccSpec {
        rating_group: Some(1),
        requested_octets: Some(None),
        ..Default::default()
    }
}

fn report(used: u64, more: bool) -> MsccSpec {
    MsccSpec {
        rating_group: Some(1),
        used_octets: Some(used),
        requested_octets: if more { Some(None) } else { None },
        ..Default::default()
    }
}

fn device(n: u64) -> String {
    format!("{}", 15_551_000_000 + n)
}

const FSYNC: &str =
    "[journal]\ndurability = \"fsync\"\n[charging]\nvalidity_time_s = 2\nreservation_grace_s = 1\n";

#[test]
fn balances_survive_restarts_and_open_reservations_stay_spent_until_they_expire() {
    let mut d = Daemon::start(FSYNC);
    let mut gw = Gw::open(&d, "pgw.localdomain");
    // Device 8000 uses its whole 10 MiB; the session ends cleanly.
    gw.ask(
        &CcrSpec::new("a;1", INITIAL, 0)
            .msisdn(&device(8000))
            .mscc(rsu()),
    );
    assert_eq!(
        gw.ask(&CcrSpec::new("a;1", UPDATE, 1).mscc(report(10 * MIB, true)))
            .result_code,
        4012
    );
    gw.ask(&CcrSpec::new("a;1", TERMINATION, 2).mscc(report(0, false)));
    // Device 8001 holds a 10 MiB reservation when the process is killed.
    assert_eq!(
        gw.ask(
            &CcrSpec::new("b;1", INITIAL, 0)
                .msisdn(&device(8001))
                .mscc(rsu())
        )
        .mscc[0]
            .granted_octets,
        Some(10 * MIB)
    );
    d.kill9();
    let mut d = Daemon::start_in(d.into_dir(), FSYNC, &[]);
    let replayed = d.wait_log("journal replayed");
    assert!(
        replayed.contains("outstanding_reservations=1"),
        "{replayed}"
    );
    let mut gw = Gw::open(&d, "pgw.localdomain");
    assert_eq!(
        gw.ask(
            &CcrSpec::new("a;2", INITIAL, 0)
                .msisdn(&device(8000))
                .mscc(rsu())
        )
        .result_code,
        4012,
        "usage survived"
    );
    assert_eq!(
        gw.ask(
            &CcrSpec::new("b;2", INITIAL, 0)
                .msisdn(&device(8001))
                .mscc(rsu())
        )
        .result_code,
        4012,
        "the open reservation still counts"
    );
    // Once it expires, supervision returns it.
    d.wait_log("supervision expired=1");
    assert_eq!(
        gw.ask(
            &CcrSpec::new("b;3", INITIAL, 0)
                .msisdn(&device(8001))
                .mscc(rsu())
        )
        .mscc[0]
            .granted_octets,
        Some(10 * MIB)
    );
    // A clean stop and start keeps everything too.
    assert!(d.terminate().success());
    let d = Daemon::start_in(d.into_dir(), FSYNC, &[]);
    let mut gw = Gw::open(&d, "pgw.localdomain");
    assert_eq!(
        gw.ask(
            &CcrSpec::new("a;3", INITIAL, 0)
                .msisdn(&device(8000))
                .mscc(rsu())
        )
        .result_code,
        4012
    );
}

/// Loads `state` (snapshot, then journal) onto a freshly provisioned default tenant and checks
/// used + reserved <= limit on every counter and, for devices 8100.., used >= acknowledged.
fn check_persisted_state(state: &std::path::Path, acked: &[u64], round: usize) {
    use ocf_charging::accounts::{provisioning, tenant};
    use ocf_store::{replay::replay, snapshot};
    let (ledger, dir) = provisioning::default_tenant();
    let engine = ocf_charging::Engine::new(ledger, dir, Default::default());
    let ledger = engine.ledger();
    let (after, open) = match std::fs::read(state.join("snapshot")) {
        Ok(data) => {
            let path = state.join("snapshot");
            let header = snapshot::header(&data, &path).unwrap();
            let loaded = snapshot::apply(
                ledger,
                header,
                &path,
                false,
                |_| {},
                |r| engine.restore_session(r),
            )
            .unwrap();
            (loaded.info.sequence, loaded.info.outstanding)
        }
        Err(_) => (0, Vec::new()),
    };
    // Read-only: work on a copy so the torn tail is cut there, not in the daemon's files.
    let copy = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(state.join("journal")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
    }
    replay(&engine, copy.path(), after, open, |_| {}).unwrap();
    for t in 0..ledger.tree_count() as u32 {
        let tree = ledger.lock(t).unwrap();
        for (i, n) in tree.nodes.iter().enumerate() {
            for c in &n.counters {
                assert!(
                    c.used + c.reserved <= c.limit,
                    "round {round}: {}: used {} + reserved {} > {}",
                    tree.names(i as u32).join("/"),
                    c.used,
                    c.reserved,
                    c.limit
                );
            }
        }
    }
    for (k, a) in acked.iter().enumerate() {
        let at = engine
            .accounts()
            .directory()
            .lookup(tenant::SubscriptionType::E164, &device(8100 + k as u64))
            .unwrap();
        let used = ledger.lock(at.tree).unwrap().nodes[at.node as usize].counters[0].used;
        assert!(
            used >= *a,
            "round {round} device {k}: persisted used {used} < acknowledged {a}"
        );
    }
}

#[test]
fn acknowledged_usage_survives_sigkill_at_random_points() {
    let mut dir = tempfile::tempdir().unwrap();
    // Acknowledged usage per device (devices 8100..8120, 10 MiB each).
    let mut acked = [0u64; 20];
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut session = 0u32;
    for round in 0..5 {
        let mut d = Daemon::start_in(dir, FSYNC, &[]);
        let mut gw = Gw::open(&d, "pgw.localdomain");
        // Before anything new: nothing acknowledged was lost. A device's next grant can never
        // exceed its limit less what it was acknowledged to have used.
        for (k, used) in acked.iter().enumerate() {
            session += 1;
            let r = gw.ask(
                &CcrSpec::new(format!("chk;{session}"), INITIAL, 0)
                    .msisdn(&device(8100 + k as u64))
                    .mscc(rsu()),
            );
            let g = r.mscc[0].granted_octets.unwrap_or(0);
            assert!(
                g + used <= 10 * MIB,
                "round {round} device {k}: granted {g} + acknowledged {used} > 10 MiB"
            );
            gw.try_ask(
                &CcrSpec::new(format!("chk;{session}"), TERMINATION, 1).mscc(report(0, false)),
            );
        }
        // Load, then a SIGKILL at a random point of it (from another thread).
        let pid = d.pid();
        let delay = Duration::from_millis(rng.u64(20..300));
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            let _ = std::process::Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        });
        'load: for _ in 0..200 {
            let k = rng.usize(..20);
            session += 1;
            let sid = format!("load;{session}");
            let Some(i) = gw.try_ask(
                &CcrSpec::new(&sid, INITIAL, 0)
                    .msisdn(&device(8100 + k as u64))
                    .mscc(rsu()),
            ) else {
                break 'load;
            };
            let g = i.mscc[0].granted_octets.unwrap_or(0);
            let used = g / 2;
            match gw.try_ask(&CcrSpec::new(&sid, TERMINATION, 1).mscc(report(used, false))) {
                Some(t) if t.result_code == 2001 => acked[k] += used,
                Some(_) => {}
                None => break 'load,
            }
        }
        killer.join().unwrap();
        d.proc.wait_exit(WAIT);
        dir = d.into_dir();
        // What the killed process left on disk, read back here as ocfd reads it at start: the
        // invariant holds on every counter of every level, and every acknowledged usage is in.
        check_persisted_state(&dir.path().join("state"), &acked, round);
    }
    // A final start checks the journal once more.
    let d = Daemon::start_in(dir, FSYNC, &[]);
    let mut gw = Gw::open(&d, "pgw.localdomain");
    for (k, used) in acked.iter().enumerate() {
        let r = gw.ask(
            &CcrSpec::new(format!("final;{k}"), INITIAL, 0)
                .msisdn(&device(8100 + k as u64))
                .mscc(rsu()),
        );
        let g = r.mscc[0].granted_octets.unwrap_or(0);
        assert!(
            g + used <= 10 * MIB,
            "device {k}: granted {g} + acknowledged {used} > 10 MiB"
        );
    }
    assert!(acked.iter().sum::<u64>() > 0, "some usage was acknowledged");
}

#[test]
fn a_corrupt_journal_stops_startup_with_file_and_offset() {
    let mut d = Daemon::start(FSYNC);
    let mut gw = Gw::open(&d, "pgw.localdomain");
    for k in 0..10 {
        gw.ask(
            &CcrSpec::new(format!("c;{k}"), INITIAL, 0)
                .msisdn(&device(8200 + k))
                .mscc(rsu()),
        );
    }
    assert!(d.terminate().success());
    let dir = d.into_dir();
    let seg = std::fs::read_dir(dir.path().join("state/journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap();
    let mut data = std::fs::read(&seg).unwrap();
    data[16 + 30] ^= 0x40; // inside the first record
    std::fs::write(&seg, &data).unwrap();
    let cfg = dir.path().join("ocfd.toml");
    let mut p = Watched::spawn("ocfd", {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ocfd"));
        c.arg("--config").arg(&cfg);
        c
    });
    let status = p.wait_exit(WAIT);
    assert!(!status.success());
    let out = p.output();
    assert!(
        out.contains(&format!("{}: offset 16: checksum mismatch", seg.display())),
        "{out}"
    );
    assert!(!out.contains("listening"), "{out}");
    // The documented way out: keep what precedes the damage, set the rest aside, start.
    let repair = std::process::Command::new(env!("CARGO_BIN_EXE_ocfd"))
        .arg("--config")
        .arg(&cfg)
        .args(["journal", "repair"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&repair.stdout);
    assert!(
        repair.status.success() && text.contains("at offset 16"),
        "{text}"
    );
    let d = Daemon::start_in(dir, FSYNC, &[]);
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let r = gw.ask(
        &CcrSpec::new("after", INITIAL, 0)
            .msisdn(&device(8300))
            .mscc(rsu()),
    );
    assert_eq!(r.mscc[0].granted_octets, Some(10 * MIB));
}

#[test]
fn snapshots_at_stop_and_on_a_timer_keep_balances_and_trim_the_journal() {
    let every_second = format!("{FSYNC}[journal]\nsnapshot_interval_s = 1\nsegment_mib = 1\n");
    // The [journal] table appears twice in that text: keep one.
    let cfg = every_second
        .replacen("[journal]\ndurability = \"fsync\"\n", "", 1)
        .replace("[journal]\n", "[journal]\ndurability = \"fsync\"\n");
    let mut d = Daemon::start(&cfg);
    let mut gw = Gw::open(&d, "pgw.localdomain");
    gw.ask(
        &CcrSpec::new("s;1", INITIAL, 0)
            .msisdn(&device(8400))
            .mscc(rsu()),
    );
    gw.ask(&CcrSpec::new("s;1", TERMINATION, 1).mscc(report(6 * MIB, false)));
    // A timed snapshot, then a kill: snapshot plus the journal after it.
    d.wait_log("snapshot written");
    gw.ask(
        &CcrSpec::new("s;2", INITIAL, 0)
            .msisdn(&device(8401))
            .mscc(rsu()),
    );
    gw.ask(&CcrSpec::new("s;2", TERMINATION, 1).mscc(report(7 * MIB, false)));
    d.kill9();
    let mut d = Daemon::start_in(d.into_dir(), &cfg, &[]);
    d.wait_log("snapshot loaded");
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let a = gw.ask(
        &CcrSpec::new("s;3", INITIAL, 0)
            .msisdn(&device(8400))
            .mscc(rsu()),
    );
    let b = gw.ask(
        &CcrSpec::new("s;4", INITIAL, 0)
            .msisdn(&device(8401))
            .mscc(rsu()),
    );
    assert_eq!(a.mscc[0].granted_octets, Some(4 * MIB));
    assert_eq!(b.mscc[0].granted_octets, Some(3 * MIB));
    gw.ask(&CcrSpec::new("s;3", TERMINATION, 1).mscc(report(0, false)));
    gw.ask(&CcrSpec::new("s;4", TERMINATION, 1).mscc(report(0, false)));
    // A clean stop snapshots everything; the restart replays nothing.
    assert!(d.terminate().success());
    let out = d.proc.output();
    assert!(out.contains("snapshot written"), "{out}");
    let mut d = Daemon::start_in(d.into_dir(), &cfg, &[]);
    let replayed = d.wait_log("journal replayed");
    assert!(replayed.contains("records=0"), "{replayed}");
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let c = gw.ask(
        &CcrSpec::new("s;5", INITIAL, 0)
            .msisdn(&device(8400))
            .mscc(rsu()),
    );
    assert_eq!(c.mscc[0].granted_octets, Some(4 * MIB), "still 6 MiB used");
}
