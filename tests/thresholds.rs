//! Thresholds and the event outbox end to end over TCP: a device's default levels (80% and
//! 100% of its limit) fire once each, the events reach `GET /v1/events` and `ocfctl events`
//! with ids that rise, and neither a `kill -9` nor a clean stop with a snapshot makes a level
//! fire again; bad queries get 400 and lose nothing.

mod common;

use common::{Daemon, Gw, Http};
use ocf_loadtest::gy::{CcrSpec, INITIAL, MsccSpec, TERMINATION, UPDATE};

const MIB: u64 = 1 << 20;
/// An acme/iot device: 10 MiB a month (DESIGN.md §7).
const IOT: &str = "15551008100";
const PATH: &str = "acme/iot/15551008100";
/// The kinds thresholds make (the last units granted also make policy_applied events).
const KINDS: &str = "threshold_crossed,limit_reached";

/// The events after `after`, waiting (bounded, by the API's long poll) until there are at
/// least `n` of them.
fn events(api: &Http, after: u64, n: usize) -> Vec<serde_json::Value> {
    let mut got: Vec<serde_json::Value> = Vec::new();
    let mut next = after;
    for _ in 0..10 {
        let (status, v) = api.call(
            "GET",
            &format!("/v1/events?after={next}&wait_ms=2000&kind={KINDS}"),
            None,
        );
        assert_eq!(status, 200, "{v}");
        got.extend(v["events"].as_array().cloned().unwrap_or_default());
        next = v["next_after"].as_u64().expect("next_after");
        if got.len() >= n {
            return got;
        }
    }
    panic!("{n} events expected after {after}, got {got:?}");
}

fn levels(events: &[serde_json::Value]) -> Vec<(String, String, u64)> {
    events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default().to_owned(),
                e["path"].as_str().unwrap_or_default().to_owned(),
                e["threshold"]["percent"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn report(gw: &mut Gw, sid: &str, number: u32, used: u64) {
    let r = gw.ask(&CcrSpec::new(sid, UPDATE, number).mscc(MsccSpec::report(10, used, true)));
    assert_eq!(r.result_code, 2001, "{r:?}");
}

#[test]
fn device_levels_fire_once_across_kill_and_snapshot_restarts() {
    let mut d = Daemon::start("");
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let sid = "pgw.localdomain;thresholds;1";
    let i = gw.ask(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(IOT)
            .mscc(MsccSpec::ask(10, 4 * MIB)),
    );
    assert_eq!(i.result_code, 2001);
    report(&mut gw, sid, 1, 7 * MIB);
    // 8 MiB of 10: 80% crossed.
    report(&mut gw, sid, 2, MIB);
    let api = d.admin();
    let first = events(&api, 0, 1);
    assert_eq!(
        levels(&first),
        [("threshold_crossed".into(), PATH.into(), 80)]
    );
    let e = &first[0];
    assert_eq!(e["tenant"], "acme");
    assert_eq!(
        (e["unit"].as_str(), e["period"].as_str()),
        (Some("octets"), Some("month"))
    );
    assert_eq!(
        (e["used"].as_u64(), e["limit"].as_u64()),
        (Some(8 * MIB), Some(10 * MIB))
    );
    assert_eq!(e["default"], true);
    let id80 = e["id"].as_u64().expect("an id");
    // Counted by kind in the metrics (refreshed once a second: a bounded wait).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let c = ocf::ctl::http::Client {
            addr: api.addr,
            token: None,
            timeout: std::time::Duration::from_secs(5),
        };
        let body = c.call("GET", "/metrics", None).unwrap().body;
        if body.contains("ocfd_events_made_total{kind=\"threshold_crossed\"} 1") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(e["seq"].as_u64(), Some(id80));

    // kill -9, restart: 80% is not fired again by more usage below 100%.
    drop(gw);
    d.kill9();
    let mut d = Daemon::start_in(d.into_dir(), "", &[]);
    let mut gw = Gw::open(&d, "pgw.localdomain");
    report(&mut gw, sid, 3, MIB / 2);
    // And a clean stop (a snapshot that lets the journal's segments go), restart.
    drop(gw);
    assert!(d.terminate().success(), "{}", d.proc.output());
    let mut d = Daemon::start_in(d.into_dir(), "", &[]);
    d.wait_log("snapshot loaded");
    let mut gw = Gw::open(&d, "pgw.localdomain");
    report(&mut gw, sid, 4, MIB / 4);
    // 7 + 1 + 1/2 + 1/4 MiB so far; 10 MiB with the last report: 100%, once.
    let t =
        gw.ask(&CcrSpec::new(sid, TERMINATION, 5).mscc(MsccSpec::report(10, MIB + MIB / 4, false)));
    assert_eq!(t.result_code, 2001);
    let api = d.admin();
    let all = events(&api, 0, 2);
    assert_eq!(
        levels(&all),
        [
            ("threshold_crossed".into(), PATH.into(), 80),
            ("limit_reached".into(), PATH.into(), 100)
        ],
        "each level once: {all:?}"
    );
    assert_eq!(
        all[0]["id"].as_u64(),
        Some(id80),
        "the same event, the same id"
    );
    assert!(all[1]["id"].as_u64() > Some(id80));
    // Nothing more is there (an immediate answer, no wait).
    let (status, v) = api.call(
        "GET",
        &format!("/v1/events?after={}&kind={KINDS}", all[1]["id"]),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(v["events"].as_array().map(Vec::len), Some(0));

    // Filters: by tenant and by node (a path and what is below it).
    for (query, n) in [
        ("tenant=acme", 2),
        ("tenant=alice", 0),
        ("node=acme/iot", 2),
        ("node=acme/io", 0),
        ("node=acme/engineering", 0),
        (&format!("node={PATH}") as &str, 2),
    ] {
        let (status, v) = api.call("GET", &format!("/v1/events?{query}&kind={KINDS}"), None);
        assert_eq!(status, 200, "{query}: {v}");
        assert_eq!(
            v["events"].as_array().map(Vec::len),
            Some(n),
            "{query}: {v}"
        );
    }
    // Paging: one at a time, each page after the last.
    let (_, p1) = api.call("GET", &format!("/v1/events?limit=1&kind={KINDS}"), None);
    let (_, p2) = api.call(
        "GET",
        &format!("/v1/events?limit=1&kind={KINDS}&after={}", p1["next_after"]),
        None,
    );
    assert_eq!(p1["events"][0]["id"].as_u64(), Some(id80));
    assert_eq!(p2["events"][0]["kind"], "limit_reached");

    // ocfctl prints them, as lines or JSON.
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ocfctl"))
            .arg("--url")
            .arg(format!("http://{}", api.addr))
            .arg("--token-file")
            .arg(d.state_path().join("admin-token"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let lines = ctl(&["events", "--kind", KINDS]);
    assert_eq!(lines.lines().count(), 2, "{lines}");
    // The last units granted went with the policy at the limit: events too.
    let all_lines = ctl(&["events"]);
    assert!(
        all_lines.contains("policy_applied") && all_lines.contains("action=terminate"),
        "{all_lines}"
    );
    assert!(
        lines.contains("threshold_crossed") && lines.contains("80% month of 10.0 MiB"),
        "{lines}"
    );
    let json = ctl(&[
        "events",
        "--json",
        "--kind",
        KINDS,
        "--after",
        &id80.to_string(),
    ]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["kind"], "limit_reached");
    assert!(d.terminate().success());
}

#[test]
fn bad_event_queries_get_400_and_lose_nothing() {
    let mut d = Daemon::start("");
    let api = d.admin();
    for query in [
        "limit=0",
        "limit=1001",
        "after=abc",
        "after=-1",
        "wait_ms=5001",
        "bogus=1",
        "limit=%FF",
    ] {
        let (status, v) = api.call("GET", &format!("/v1/events?{query}"), None);
        assert_eq!(status, 400, "{query}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{query}: {v}"
        );
    }
    let (status, _) = api.call("GET", "/v1/events", None);
    assert_eq!(status, 200);
    // Without the token: refused.
    let anon = Http {
        addr: api.addr,
        token: None,
    };
    assert_eq!(anon.call("GET", "/v1/events", None).0, 401);
    d.assert_serving();
    assert!(d.terminate().success());
}

#[test]
fn a_cost_centre_threshold_set_with_ocfctl_fires_for_its_devices_usage() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let ctl = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ocfctl"))
            .arg("--url")
            .arg(format!("http://{}", api.addr))
            .arg("--token-file")
            .arg(d.state_path().join("admin-token"))
            .args(args)
            .output()
            .unwrap()
    };
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // acme/iot: 20 MiB, 50% of it and an amount of 18 MiB.
    ok(ctl(&["limit", "acme/iot", "--limit", "octets:20MiB"]));
    let shown = ok(ctl(&[
        "thresholds",
        "acme/iot",
        "--level",
        "50%",
        "--level",
        "octets:month:18MiB",
    ]));
    assert!(
        shown.contains("thresholds: 50%, octets:month:18.0 MiB"),
        "{shown}"
    );
    // A bad level is refused by ocfctl or by the API, and changes nothing.
    for bad in ["octets", "150%", "4GiB"] {
        let out = ctl(&["thresholds", "acme/iot", "--level", bad]);
        assert!(!out.status.success(), "{bad} accepted");
    }
    let (_, node) = api.call("GET", "/v1/nodes/acme/iot", None);
    assert_eq!(
        node["thresholds"].as_array().map(Vec::len),
        Some(2),
        "{node}"
    );

    // Two devices: 8 MiB and 5 MiB, 13 MiB of 20 under acme/iot: 50% crossed once.
    let mut gw = Gw::open(&d, "pgw.localdomain");
    for (k, (device, used)) in [("15551008200", 8 * MIB), ("15551008201", 5 * MIB)]
        .into_iter()
        .enumerate()
    {
        let sid = format!("pgw.localdomain;cc;{k}");
        let i = gw.ask(
            &CcrSpec::new(&sid, INITIAL, 0)
                .msisdn(device)
                .mscc(MsccSpec::ask(10, MIB)),
        );
        assert_eq!(i.result_code, 2001);
        let t = gw.ask(&CcrSpec::new(&sid, TERMINATION, 1).mscc(MsccSpec::report(10, used, false)));
        assert_eq!(t.result_code, 2001);
    }
    let own: Vec<serde_json::Value> = events(&api, 0, 2)
        .into_iter()
        .filter(|e| e["path"] == "acme/iot")
        .collect();
    assert_eq!(own.len(), 1, "{own:?}");
    assert_eq!(own[0]["default"], false);
    assert_eq!(own[0]["threshold"]["percent"], 50);
    assert_eq!(own[0]["used"].as_u64(), Some(13 * MIB));

    // The thresholds are in the change log: a kill -9 keeps them.
    drop(gw);
    d.kill9();
    let mut d = Daemon::start_in(d.into_dir(), "", &[]);
    let api = d.admin();
    let (_, node) = api.call("GET", "/v1/nodes/acme/iot", None);
    assert_eq!(node["thresholds"][0]["percent"], 50, "{node}");
    assert_eq!(
        node["thresholds"][1]["amount"].as_u64(),
        Some(18 * MIB),
        "{node}"
    );
    assert!(d.terminate().success());
}

#[test]
fn the_event_stream_delivers_events_as_they_are_written() {
    use std::io::{BufRead, BufReader, Write};
    let mut d = Daemon::start("");
    let api = d.admin();
    let mut s = std::net::TcpStream::connect(api.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    write!(
        s,
        "GET /v1/events/stream?kind=blocked HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        api.token.clone().unwrap()
    )
    .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut head = String::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        if l == "\r\n" {
            break;
        }
        head.push_str(&l);
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_lowercase().contains("text/event-stream"), "{head}");
    // An event made after the stream opened arrives on it.
    let (status, _) = api.call("PUT", "/v1/blocked/acme/iot/15551008150", None);
    assert_eq!(status, 200);
    let mut seen = String::new();
    while !seen.contains("data: ") {
        let mut l = String::new();
        assert!(r.read_line(&mut l).unwrap() > 0, "the stream ended: {seen}");
        seen.push_str(&l);
    }
    assert!(
        seen.contains("\"kind\":\"blocked\"") && seen.contains("acme/iot/15551008150"),
        "{seen}"
    );
    assert!(seen.contains("id: "), "{seen}");
    drop(r);
    drop(s);
    d.assert_serving();
    assert!(d.terminate().success());
}
