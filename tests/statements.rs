//! Statements end to end: sessions on three devices of the embedded tenant, ended; the
//! statement of acme for the month, summed from the usage records, equals the ledger's usage
//! of every device, cost centre and the enterprise, to the octet; as JSON, CSV and through
//! `ocfctl statement`; a viewer of another part of the tree cannot read it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ocf_loadtest::gy::{CcrSpec, INITIAL, MsccSpec, TERMINATION, UPDATE};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// The month's used octets of a node, as the ledger says.
fn ledger_used(api: &Http, path: &str) -> u64 {
    let (status, n) = api.call("GET", &format!("/v1/nodes/{path}"), None);
    assert_eq!(status, 200, "{n}");
    n["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["unit"] == "octets" && l["period"] == "month")
        .and_then(|l| l["used"].as_u64())
        .unwrap_or_else(|| panic!("{path}: {n}"))
}

#[test]
fn a_statement_equals_the_ledger_to_the_octet() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let devices = [("15551000000", 3), ("15551000001", 5), ("15551005000", 7)];
    for (k, (msisdn, mib)) in devices.iter().enumerate() {
        let sid = format!("pgw.localdomain;stmt;{k}");
        let i = gw.ask(
            &CcrSpec::new(&sid, INITIAL, 0)
                .msisdn(msisdn)
                .mscc(MsccSpec::ask(10, 8 * MIB)),
        );
        assert_eq!(i.result_code, 2001);
        gw.ask(
            &CcrSpec::new(&sid, UPDATE, 1)
                .msisdn(msisdn)
                .mscc(MsccSpec::report(10, mib * MIB, true)),
        );
        let t = gw.ask(
            &CcrSpec::new(&sid, TERMINATION, 2)
                .msisdn(msisdn)
                .mscc(MsccSpec::report(10, 123_457, false)),
        );
        assert_eq!(t.result_code, 2001);
    }
    // The usage follower writes the records a moment after the answers: waited for, bounded.
    let deadline = Instant::now() + WAIT;
    let st = loop {
        let (status, st) = api.call("GET", "/v1/statements/acme", None);
        assert_eq!(status, 200, "{st}");
        let records = st["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["path"] == "acme")
            .map_or(0, |l| l["records"].as_u64().unwrap_or(0));
        if records == 3 {
            break st;
        }
        assert!(Instant::now() < deadline, "three records expected: {st}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let lines: Vec<&Value> = st["lines"].as_array().unwrap().iter().collect();
    let paths: Vec<&str> = lines.iter().map(|l| l["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "acme",
            "acme/engineering",
            "acme/engineering/15551000000",
            "acme/engineering/15551000001",
            "acme/sales",
            "acme/sales/15551005000"
        ]
    );
    for l in &lines {
        let path = l["path"].as_str().unwrap();
        assert_eq!(
            l["octets"].as_u64().unwrap(),
            ledger_used(&api, path),
            "{path}"
        );
    }
    assert_eq!(lines[0]["octets"], 15 * MIB + 3 * 123_457);
    assert_eq!(
        (&lines[2]["device"], &lines[1]["device"]),
        (&true.into(), &false.into())
    );

    // CSV, and ocfctl.
    let c = ocf::ctl::http::Client {
        addr: api.addr,
        token: api.token.clone(),
        timeout: WAIT,
    };
    let csv = c
        .call("GET", "/v1/statements/acme?format=csv", None)
        .unwrap();
    assert_eq!(csv.status, 200);
    let mut rows = csv.body.lines();
    assert_eq!(
        rows.next(),
        Some("path,kind,octets,seconds,events,money,records")
    );
    assert_eq!(
        rows.next(),
        Some(format!("acme,node,{},0,0,0.000000000,3", 15 * MIB + 3 * 123_457).as_str())
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ocfctl"))
        .arg("--url")
        .arg(format!("http://{}", api.addr))
        .arg("--token-file")
        .arg(d.state_path().join("admin-token"))
        .args(["statement", "acme"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("PATH\tOCTETS"), "{text}");
    assert!(text.contains("acme/sales/15551005000\t"), "{text}");

    // A period with nothing in it, bad periods, unknown tenants; a viewer of sales only.
    let (_, empty) = api.call("GET", "/v1/statements/acme?from=0&to=1", None);
    assert_eq!(empty["lines"].as_array().unwrap().len(), 0);
    assert_eq!(
        api.call("GET", "/v1/statements/acme?from=5&to=5", None).0,
        400
    );
    assert_eq!(api.call("GET", "/v1/statements/nobody", None).0, 404);
    let body = r#"{"name":"v","role":"viewer","scope":"acme/sales"}"#;
    let (_, t) = api.call("POST", "/v1/tokens", Some(body));
    let viewer = Http {
        addr: api.addr,
        token: t["token"].as_str().map(str::to_owned),
    };
    assert_eq!(viewer.call("GET", "/v1/statements/acme", None).0, 403);
}

#[test]
fn reconcile_holds_the_ledger_to_the_usage_records_and_says_when_they_differ() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let mut gw = Gw::open(&d, "pgw.localdomain");
    // One session ended, one open with usage reported, alice rated in money.
    for (sid, msisdn, end) in [
        ("pgw.localdomain;rec;1", "15551000000", true),
        ("pgw.localdomain;rec;2", "15551008000", false),
        ("pgw.localdomain;rec;3", "15559990001", true),
    ] {
        gw.ask(
            &CcrSpec::new(sid, INITIAL, 0)
                .msisdn(msisdn)
                .mscc(MsccSpec::ask(10, MIB)),
        );
        gw.ask(
            &CcrSpec::new(sid, UPDATE, 1)
                .msisdn(msisdn)
                .mscc(MsccSpec::report(10, 700_001, true)),
        );
        if end {
            gw.ask(
                &CcrSpec::new(sid, TERMINATION, 2)
                    .msisdn(msisdn)
                    .mscc(MsccSpec::report(10, 1, false)),
            );
        }
    }
    let ctl = |d: &mut Daemon| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ocfctl"))
            .arg("--url")
            .arg(format!("http://{}", d.admin_addr()))
            .arg("--token-file")
            .arg(d.state_path().join("admin-token"))
            .arg("reconcile")
            .output()
            .unwrap()
    };
    let (status, r) = api.call("GET", "/v1/reconcile", None);
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["consistent"], true, "{r}");
    assert_eq!(r["accounts"], 3, "{r}");
    let out = ctl(&mut d);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("consistent"));
    // A usage record lost from the files (not the last one, which the follower would copy
    // again from the journal at the next start): the difference is named, ocfctl exits 4.
    d.terminate();
    let usage = d.state_path().join("usage");
    for f in std::fs::read_dir(&usage).unwrap() {
        let p = f.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let kept: Vec<&str> = text.lines().filter(|l| !l.contains("rec;1")).collect();
        std::fs::write(&p, kept.join("\n") + "\n").unwrap();
    }
    let dir = d.into_dir();
    let mut d = Daemon::start_in(dir, "", &[]);
    let api = d.admin();
    let (_, r) = api.call("GET", "/v1/reconcile", None);
    assert_eq!(r["consistent"], false, "{r}");
    let diffs = r["differences"].as_array().unwrap();
    assert!(
        diffs
            .iter()
            .any(|x| x["account"] == "acme/engineering/15551000000"
                && x["unit"] == "octets"
                && x["ledger"] == 700_002
                && x["usage_records"] == 0),
        "{diffs:?}"
    );
    let out = ctl(&mut d);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("acme/engineering/15551000000 octets: ledger 700002"),
        "{err}"
    );
}
