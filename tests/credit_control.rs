//! Gy credit control end to end over TCP against `ocfd` on the embedded default tenant
//! (DESIGN.md §7): enterprise acme (engineering, sales, iot) and consumer alice.

mod common;

use common::*;
use ocf_loadtest::gy::{CcrSpec, EVENT, INITIAL, MsccSpec, TERMINATION, UPDATE};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

fn device(n: u64) -> String {
    format!("{}", 15_551_000_000 + n)
}

#[test]
fn full_session_for_an_engineering_device() {
    let d = Daemon::start("");
    let mut gw = Gw::open(&d, "pgw1.localdomain");
    let sid = "pgw1;eng;1";
    let i = gw.ask(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(&device(42))
            .mscc(MsccSpec::rsu(10)),
    );
    assert_eq!(
        (i.result_code, i.request_type, i.request_number),
        (2001, Some(INITIAL), Some(0))
    );
    let m = &i.mscc[0];
    assert_eq!(
        (m.rating_group, m.result_code, m.granted_octets),
        (Some(10), Some(2001), Some(10 * MIB))
    );
    assert_eq!(
        (m.validity_time, m.volume_threshold, m.final_unit_action),
        (Some(600), Some(2 * MIB as u32), None)
    );

    let u = gw.ask(&CcrSpec::new(sid, UPDATE, 1).mscc(MsccSpec::report(10, 10 * MIB, true)));
    assert_eq!(
        (u.result_code, u.mscc[0].granted_octets),
        (2001, Some(10 * MIB))
    );
    // A second service in the same session, by IMSI this time for a new session check below.
    let t = gw.ask(&CcrSpec::new(sid, TERMINATION, 2).mscc(MsccSpec {
        rating_group: Some(10),
        used_octets: Some(4 * MIB),
        reporting_reason: Some(2),
        ..Default::default()
    }));
    assert_eq!((t.result_code, t.request_type), (2001, Some(TERMINATION)));
    assert_eq!(t.mscc[0].granted_octets, None);
    // The session is over: an update for it is 5002.
    assert_eq!(
        gw.ask(&CcrSpec::new(sid, UPDATE, 3).mscc(MsccSpec::rsu(10)))
            .result_code,
        5002
    );
    // The device, found by IMSI, opens a new session.
    let again = gw.ask(
        &CcrSpec::new("pgw1;eng;2", INITIAL, 0)
            .imsi("001010000000042")
            .mscc(MsccSpec::rsu(10)),
    );
    assert_eq!(again.mscc[0].granted_octets, Some(10 * MIB));
}

#[test]
fn an_iot_device_runs_out_at_10_mib() {
    let d = Daemon::start("");
    let mut gw = Gw::open(&d, "pgw1.localdomain");
    let sid = "pgw1;iot;1";
    let i = gw.ask(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(&device(8000))
            .mscc(MsccSpec::rsu(1)),
    );
    // The whole 10 MiB at once: the last units, so Final-Unit-Indication TERMINATE.
    assert_eq!(
        (i.mscc[0].granted_octets, i.mscc[0].final_unit_action),
        (Some(10 * MIB), Some(0))
    );
    let u = gw.ask(&CcrSpec::new(sid, UPDATE, 1).mscc(MsccSpec::report(1, 10 * MIB, true)));
    assert_eq!(u.mscc[0].result_code, Some(4012));
    assert_eq!(
        u.result_code, 4012,
        "nothing could be granted: 4012 at command level too"
    );
    assert_eq!(u.mscc[0].granted_octets, None);
}

#[test]
fn the_sales_cap_is_reached_before_any_device_cap() {
    let d = Daemon::start("");
    let mut gw = Gw::open(&d, "pgw1.localdomain");
    // 25 sales devices each report 4 GiB (more than granted, still charged): 100 GiB, the
    // cost centre's whole allowance, while every device has 1 GiB of its 5 GiB left.
    for k in 0..25u64 {
        let sid = format!("pgw1;sales;{k}");
        let i = gw.ask(
            &CcrSpec::new(&sid, INITIAL, 0)
                .msisdn(&device(5000 + k))
                .mscc(MsccSpec::rsu(1)),
        );
        assert_eq!(i.mscc[0].granted_octets, Some(10 * MIB), "device {k}");
        let t =
            gw.ask(&CcrSpec::new(&sid, TERMINATION, 1).mscc(MsccSpec::report(1, 4 * GIB, false)));
        assert_eq!(t.result_code, 2001);
    }
    let fresh = gw.ask(
        &CcrSpec::new("pgw1;sales;fresh", INITIAL, 0)
            .msisdn(&device(5100))
            .mscc(MsccSpec::rsu(1)),
    );
    assert_eq!(
        (fresh.result_code, fresh.mscc[0].result_code),
        (4012, Some(4012))
    );
    let used = gw.ask(
        &CcrSpec::new("pgw1;sales;used", INITIAL, 0)
            .msisdn(&device(5000))
            .mscc(MsccSpec::rsu(1)),
    );
    assert_eq!(
        used.result_code, 4012,
        "the device still has 1 GiB but its cost centre has none"
    );
    // Other cost centres of the enterprise are unaffected.
    let eng = gw.ask(
        &CcrSpec::new("pgw1;eng;x", INITIAL, 0)
            .msisdn(&device(1))
            .mscc(MsccSpec::rsu(1)),
    );
    assert_eq!(eng.mscc[0].granted_octets, Some(10 * MIB));
}

#[test]
fn two_hundred_iot_sessions_race_for_the_cost_centre() {
    let d = Daemon::start("");
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let mut gw = Gw::open(&d, &format!("pgw{t}.localdomain"));
            std::thread::spawn(move || {
                let mut granted = 0u64;
                let mut used = 0u64;
                // 25 devices per gateway, interleaved: each asks, reports what it got, asks again.
                let sessions: Vec<u64> = (0..25).map(|k| 8000 + t * 25 + k).collect();
                let mut open: Vec<(u64, u32, u64)> = Vec::new();
                for &n in &sessions {
                    let sid = format!("pgw{t};race;{n}");
                    let r = gw.ask(
                        &CcrSpec::new(&sid, INITIAL, 0)
                            .msisdn(&device(n))
                            .mscc(MsccSpec::rsu(1)),
                    );
                    let g = r.mscc[0].granted_octets.unwrap_or(0);
                    granted += g;
                    open.push((n, 1, g));
                }
                while !open.is_empty() {
                    let mut still = Vec::new();
                    for (n, num, held) in open {
                        let sid = format!("pgw{t};race;{n}");
                        if held == 0 {
                            gw.ask(
                                &CcrSpec::new(&sid, TERMINATION, num)
                                    .mscc(MsccSpec::report(1, 0, false)),
                            );
                            continue;
                        }
                        used += held;
                        let r = gw.ask(
                            &CcrSpec::new(&sid, UPDATE, num).mscc(MsccSpec::report(1, held, true)),
                        );
                        let g = r.mscc[0].granted_octets.unwrap_or(0);
                        granted += g;
                        still.push((n, num + 1, g));
                    }
                    open = still;
                }
                (granted, used)
            })
        })
        .collect();
    let (mut granted, mut used) = (0u64, 0u64);
    for t in threads {
        let (g, u) = t.join().unwrap();
        granted += g;
        used += u;
    }
    assert!(granted <= GIB, "granted {granted} > 1 GiB");
    assert_eq!(granted, GIB, "the whole pool was handed out");
    assert_eq!(used, granted);
    // The pool is empty: another iot device gets nothing.
    let mut gw = Gw::open(&d, "pgwx.localdomain");
    let late = gw.ask(
        &CcrSpec::new("late", INITIAL, 0)
            .msisdn(&device(9999))
            .mscc(MsccSpec::rsu(1)),
    );
    assert_eq!(late.result_code, 4012);
}

#[test]
fn unreported_reservations_expire_back_to_the_pool() {
    let mut d = Daemon::start_with(
        "[charging]\nvalidity_time_s = 1\nreservation_grace_s = 1\n",
        &[],
    );
    let mut gw = Gw::open(&d, "pgw1.localdomain");
    let first = gw.ask(
        &CcrSpec::new("gone;1", INITIAL, 0)
            .msisdn(&device(8100))
            .mscc(MsccSpec::rsu(1)),
    );
    assert_eq!(first.mscc[0].granted_octets, Some(10 * MIB));
    // The device's 10 MiB are all reserved by a gateway that then goes silent.
    let second = gw.ask(
        &CcrSpec::new("gone;2", INITIAL, 0)
            .msisdn(&device(8100))
            .mscc(MsccSpec::rsu(1)),
    );
    assert_eq!(second.result_code, 4012);
    // Wait for the reservation itself: the refused session "gone;2" may be closed first, in
    // another part of the supervision pass, and that is logged too.
    d.wait_log("supervision expired=1");
    let third = gw.ask(
        &CcrSpec::new("gone;3", INITIAL, 0)
            .msisdn(&device(8100))
            .mscc(MsccSpec::rsu(1)),
    );
    assert_eq!(third.mscc[0].granted_octets, Some(10 * MIB));
    d.wait_log("outcome=\"supervision timeout\"");
}

#[test]
fn unknown_subscriber_and_unknown_session() {
    let d = Daemon::start("");
    let mut gw = Gw::open(&d, "pgw1.localdomain");
    let (m, r) = gw.send(
        &CcrSpec::new("nobody", INITIAL, 0)
            .msisdn("15550000000")
            .mscc(MsccSpec::rsu(1)),
    );
    assert_eq!(r.result_code, 5030);
    assert!(!m.header.flags.is_error());
    assert_eq!(
        (r.request_type, r.request_number),
        (Some(INITIAL), Some(0)),
        "echoed"
    );
    assert_eq!(
        gw.ask(&CcrSpec::new("never-opened", UPDATE, 1).mscc(MsccSpec::rsu(1)))
            .result_code,
        5002
    );
    assert_eq!(
        gw.ask(&CcrSpec::new("never-opened", TERMINATION, 1))
            .result_code,
        5002
    );
}

#[test]
fn a_retransmission_is_answered_the_same_and_charged_once() {
    let d = Daemon::start("");
    let mut gw = Gw::open(&d, "pgw1.localdomain");
    let sid = "pgw1;retx";
    gw.ask(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(&device(8200))
            .mscc(MsccSpec::rsu(1)),
    );
    let update = CcrSpec::new(sid, UPDATE, 1).mscc(MsccSpec::report(1, 5 * MIB, true));
    let (first_msg, first) = gw.send(&update);
    assert_eq!(first.mscc[0].granted_octets, Some(5 * MIB));
    let mut again = update.clone();
    again.retransmit = true;
    let (second_msg, second) = gw.send(&again);
    assert_eq!(second, first);
    assert_eq!(
        first_msg.avps().collect::<Vec<_>>(),
        second_msg.avps().collect::<Vec<_>>(),
        "byte for byte"
    );
    // Charged once: 5 MiB used, 5 MiB held; reporting none of it leaves 5 MiB to grant.
    let next = gw.ask(&CcrSpec::new(sid, UPDATE, 2).mscc(MsccSpec::report(1, 0, true)));
    assert_eq!(next.mscc[0].granted_octets, Some(5 * MIB));
    // An older request number is refused and charges nothing.
    let stale = gw.ask(&CcrSpec::new(sid, UPDATE, 1).mscc(MsccSpec::report(1, 5 * MIB, true)));
    assert_eq!(stale.result_code, 5004);
    let after = gw.ask(&CcrSpec::new(sid, UPDATE, 3).mscc(MsccSpec::report(1, 0, true)));
    assert_eq!(after.mscc[0].granted_octets, Some(5 * MIB));
}

#[test]
fn alice_is_rated_to_the_cent() {
    let d = Daemon::start("");
    let mut gw = Gw::open(&d, "pgw1.localdomain");
    let i = gw.ask(
        &CcrSpec::new("alice;1", INITIAL, 0)
            .msisdn("15559990001")
            .mscc(MsccSpec::rsu(7)),
    );
    assert_eq!(i.mscc[0].granted_octets, Some(10 * MIB));
    // 490.5 MiB at 0.01 EUR/MiB = 4.905 EUR, reported in odd pieces.
    let pieces = [123_456_789u64, 200_000_001, 190_869_738];
    assert_eq!(pieces.iter().sum::<u64>(), 490 * MIB + MIB / 2);
    for (k, p) in pieces.iter().enumerate() {
        let r = gw.ask(
            &CcrSpec::new("alice;1", UPDATE, k as u32 + 1).mscc(MsccSpec::report(7, *p, true)),
        );
        assert_eq!(r.result_code, 2001);
    }
    gw.ask(&CcrSpec::new("alice;1", TERMINATION, 4).mscc(MsccSpec::report(7, 0, false)));
    // 0.095 EUR left buys exactly 9.5 MiB (not an octet less), and it is the last grant.
    let j = gw.ask(
        &CcrSpec::new("alice;2", INITIAL, 0)
            .msisdn("15559990001")
            .mscc(MsccSpec::rsu(7)),
    );
    assert_eq!(j.mscc[0].granted_octets, Some(9_961_472));
    assert_eq!(j.mscc[0].final_unit_action, Some(0));
    // Price enquiry: 1 MiB costs 0.01 EUR (978).
    let mut price = CcrSpec::new("alice;price", EVENT, 0)
        .msisdn("15559990001")
        .mscc(MsccSpec {
            requested_octets: Some(Some(MIB)),
            ..Default::default()
        });
    price.requested_action = Some(3);
    assert_eq!(gw.ask(&price).cost, Some((1, -2, 978)));
    let mut check = CcrSpec::new("alice;check", EVENT, 0)
        .msisdn("15559990001")
        .mscc(MsccSpec {
            requested_octets: Some(Some(10 * MIB)),
            ..Default::default()
        });
    check.requested_action = Some(2);
    assert_eq!(
        gw.ask(&check).check_balance,
        Some(1),
        "NO_CREDIT for 10 MiB with 0.095 EUR"
    );
    // Using it all leaves exactly nothing.
    gw.ask(&CcrSpec::new("alice;2", TERMINATION, 1).mscc(MsccSpec::report(7, 9_961_472, false)));
    let k = gw.ask(
        &CcrSpec::new("alice;3", INITIAL, 0)
            .msisdn("15559990001")
            .mscc(MsccSpec::rsu(7)),
    );
    assert_eq!(k.result_code, 4012);
    // Time is not rated for alice.
    let t = gw.ask(
        &CcrSpec::new("alice;4", INITIAL, 0)
            .msisdn("15559990001")
            .mscc(MsccSpec {
                rating_group: Some(9),
                requested_time: Some(60),
                ..Default::default()
            }),
    );
    assert_eq!(t.mscc[0].result_code, Some(5031));
}

#[test]
fn events_debit_and_refund() {
    let d = Daemon::start("");
    let mut gw = Gw::open(&d, "pgw1.localdomain");
    let mut debit = CcrSpec::new("ev;1", EVENT, 0)
        .msisdn(&device(8300))
        .mscc(MsccSpec {
            requested_octets: Some(Some(6 * MIB)),
            ..Default::default()
        });
    debit.requested_action = Some(0);
    let r = gw.ask(&debit);
    assert_eq!(
        (r.result_code, r.mscc[0].granted_octets),
        (2001, Some(6 * MIB))
    );
    // 4 MiB left: a second 6 MiB debit is refused whole.
    debit.session_id = "ev;2".into();
    assert_eq!(gw.ask(&debit).result_code, 4012);
    let mut refund = debit.clone();
    refund.session_id = "ev;3".into();
    refund.requested_action = Some(1);
    assert_eq!(gw.ask(&refund).result_code, 2001);
    debit.session_id = "ev;4".into();
    assert_eq!(
        gw.ask(&debit).result_code,
        2001,
        "the refund made room again"
    );
}
