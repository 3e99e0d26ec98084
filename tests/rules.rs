//! Rules over the request end to end over TCP (docs/rules.md): a BYOD device charging RG 10 to
//! the enterprise and RG 20 to its user's personal money account in one session; a time
//! window that closes seconds after the test starts, the grant cut to its edge and the next
//! one charged by the new rule; a manager changing the rules mid-session (what was granted is
//! settled where it was granted, a retransmission charges nothing again); rules and links that
//! survive a restart; a bad rule refused whole; explain and what-if through the API and
//! `ocfctl`.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use ocf_loadtest::gy::{CcrSpec, INITIAL, MsccSpec, TERMINATION, UPDATE};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const BOB: &str = "15552000001";
const SUCCESS: u32 = 2001;
const DENIED: u32 = 4010;

/// The tenants: bob's phone in byod/staff, his own prepaid account at 0.01 EUR per MiB.
/// `extra_rules` go first on bob's phone.
fn tenants(extra_rules: &str) -> String {
    format!(
        r#"
[[tenant]]
name = "byod"
[tenant.policy]
home_networks = ["00101"]
[tenant.policy.zones]
eu = ["208", "262"]

[[tenant.node]]
path = "byod"
limits = [{{ unit = "octets", amount = "10 GiB" }}]

[[tenant.node]]
path = "byod/staff"
limits = [{{ unit = "octets", amount = "5 GiB" }}]
  [[tenant.node.rules]]
  name = "no-gaming"
  rating_groups = [30]
  charge = "deny"

[[tenant.node]]
path = "byod/staff/bob"
msisdn = "{BOB}"
personal_account = "15553000001"
limits = [{{ unit = "octets", amount = "1 GiB" }}]
{extra_rules}
  [[tenant.node.rules]]
  name = "personal-video"
  rating_groups = [20]
  charge = "personal"

[[tenant]]
name = "bob-personal"
[tenant.policy.tariff]
price = "0.01"
per_octets = "1 MiB"

[[tenant.node]]
path = "bob-personal"
msisdn = "15553000001"
limits = [{{ unit = "money", amount = "20.00" }}]
"#
    )
}

fn start(text: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenants.toml");
    std::fs::write(&file, text).unwrap();
    Daemon::start_in(
        dir,
        &format!(
            "[charging]\nembedded_tenant = false\ntenant_files = [\"{}\"]\n",
            file.display()
        ),
        &[],
    )
}

/// (used, reserved) of the first limit of `path`, as the API shows them.
fn level(api: &Http, path: &str) -> (Value, Value) {
    let (status, node) = api.call("GET", &format!("/v1/nodes/{path}"), None);
    assert_eq!(status, 200, "{node}");
    let l = &node["limits"][0];
    (l["used"].clone(), l["reserved"].clone())
}

fn ocfctl(d: &mut Daemon, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ocfctl"))
        .arg("--url")
        .arg(format!("http://{}", d.admin_addr()))
        .arg("--token-file")
        .arg(d.state_path().join("admin-token"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ocfctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn one_byod_session_charges_two_accounts_and_explains_why() {
    let mut d = start(&tenants(""));
    let api = d.admin();
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let sid = "pgw.localdomain;byod;1";
    let i = gw.ask(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(BOB)
            .apn("internet")
            .serving_network("00101")
            .rat_type(6)
            .mscc(MsccSpec::ask(10, 4 * MIB))
            .mscc(MsccSpec::ask(20, 4 * MIB))
            .mscc(MsccSpec::ask(30, MIB)),
    );
    let results: Vec<_> = i.mscc.iter().map(|m| m.result_code).collect();
    assert_eq!(
        results,
        [Some(SUCCESS), Some(SUCCESS), Some(DENIED)],
        "{i:?}"
    );
    assert_eq!(level(&api, "byod/staff/bob"), (0.into(), (4 * MIB).into()));
    assert_eq!(level(&api, "bob-personal").1, "0.04", "4 MiB held as money");

    let u = gw.ask(
        &CcrSpec::new(sid, UPDATE, 1)
            .msisdn(BOB)
            .mscc(MsccSpec::report(10, 3 * MIB, true))
            .mscc(MsccSpec::report(20, 2 * MIB, true)),
    );
    assert_eq!(u.result_code, SUCCESS);
    let t = gw.ask(
        &CcrSpec::new(sid, TERMINATION, 2)
            .msisdn(BOB)
            .mscc(MsccSpec::report(10, MIB, false))
            .mscc(MsccSpec::report(20, MIB, false)),
    );
    assert_eq!(t.result_code, SUCCESS);
    assert_eq!(level(&api, "byod/staff/bob"), ((4 * MIB).into(), 0.into()));
    assert_eq!(level(&api, "byod"), ((4 * MIB).into(), 0.into()));
    assert_eq!(level(&api, "bob-personal"), ("0.03".into(), "0".into()));

    // Explain: the decisions, newest first, and the usage record read back from the files
    // (the follower writes it a moment after the answer: waited for, bounded).
    let deadline = Instant::now() + WAIT;
    let x = loop {
        let (status, x) = api.call("GET", &format!("/v1/explain/{BOB}"), None);
        assert_eq!(status, 200, "{x}");
        if !x["history"].as_array().unwrap().is_empty() {
            break x;
        }
        assert!(Instant::now() < deadline, "no usage record in explain: {x}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(x["account"], "byod/staff/bob");
    let decisions = x["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 3);
    let first = &decisions[2];
    assert_eq!(first["request_type"], "initial");
    let attrs = &first["attributes"];
    assert_eq!(
        (
            &attrs["apn"],
            &attrs["serving_network"],
            &attrs["rat_type"],
            &attrs["roaming"]
        ),
        (
            &"internet".into(),
            &"00101".into(),
            &"EUTRAN".into(),
            &false.into()
        )
    );
    let s = first["services"].as_array().unwrap();
    assert_eq!(
        (&s[0]["charge"], &s[0]["account"]),
        (&"corporate".into(), &"byod/staff/bob".into())
    );
    assert_eq!(
        (&s[1]["rule"], &s[1]["account"]),
        (&"personal-video".into(), &"bob-personal".into())
    );
    assert_eq!(
        (&s[2]["rule"], &s[2]["result_code"]),
        (&"no-gaming".into(), &DENIED.into())
    );
    let levels: Vec<&str> = s[0]["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["path"].as_str().unwrap())
        .collect();
    assert_eq!(levels, ["byod/staff/bob", "byod/staff", "byod"]);
    let record = &x["history"][0];
    let rg20 = record["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["rating_group"] == 20)
        .unwrap();
    assert_eq!(
        (&rg20["account"], &rg20["rule"]),
        (&"bob-personal".into(), &"personal-video".into())
    );
    assert_eq!(rg20["octets"], 3 * MIB);

    // The same through ocfctl, and a what-if that charges nothing.
    let text = ocfctl(&mut d, &["explain", BOB]);
    assert!(
        text.contains("rule personal-video (personal) -> bob-personal"),
        "{text}"
    );
    assert!(
        text.contains("rule no-gaming (deny) -> byod/staff/bob: a rule denies this service"),
        "{text}"
    );
    let w = ocfctl(
        &mut d,
        &[
            "explain",
            BOB,
            "--what-if",
            "--rating-group",
            "20",
            "--json",
        ],
    );
    let w: Value = serde_json::from_str(&w).unwrap();
    assert_eq!(w["service"]["rule"], "personal-video");
    assert_eq!(w["service"]["granted"], 10 * MIB);
    assert_eq!(level(&api, "bob-personal"), ("0.03".into(), "0".into()));
}

/// The UTC time of day `offset_s` from now, "HH:MM:SS".
fn utc_time_of_day(offset_s: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let s = (now + offset_s).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[test]
fn a_window_that_closes_mid_session_cuts_the_grant_and_the_next_goes_by_the_new_rule() {
    // RG 10 goes to bob's personal account until 4 s from now, then to the company.
    let window = format!(
        "  [[tenant.node.rules]]\n  name = \"happy-hour\"\n  rating_groups = [10]\n  hours = [\"{}-{}\"]\n  charge = \"personal\"\n",
        utc_time_of_day(-3600),
        utc_time_of_day(4)
    );
    let mut d = start(&tenants(&window));
    let api = d.admin();
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let sid = "pgw.localdomain;window;1";
    let i = gw.ask(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(BOB)
            .mscc(MsccSpec::ask(10, 2 * MIB)),
    );
    assert_eq!(i.mscc[0].result_code, Some(SUCCESS), "{i:?}");
    let validity = i.mscc[0].validity_time.unwrap();
    assert!(
        (1..=4).contains(&validity),
        "cut to the window's edge: {validity} s"
    );
    assert_eq!(level(&api, "bob-personal").1, "0.02");
    // Wait, bounded, until ocfd itself says the window has closed.
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, w) = api.call(
            "GET",
            &format!("/v1/explain/{BOB}/what-if?rating_group=10"),
            None,
        );
        if w["service"]["rule"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "the window never closed: {w}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The report of the old grant is charged where it was granted; the next grant is the
    // company's.
    let u = gw.ask(
        &CcrSpec::new(sid, UPDATE, 1)
            .msisdn(BOB)
            .mscc(MsccSpec::report(10, MIB, true)),
    );
    assert_eq!(u.mscc[0].result_code, Some(SUCCESS), "{u:?}");
    assert_eq!(u.mscc[0].validity_time, Some(600), "no rule edge ahead");
    assert_eq!(level(&api, "bob-personal"), ("0.01".into(), "0".into()));
    assert_eq!(level(&api, "byod/staff/bob"), (0.into(), (10 * MIB).into()));
}

#[test]
fn a_manager_changes_rules_mid_session_and_nothing_is_lost_or_doubled() {
    let mut d = start(&tenants(""));
    let api = d.admin();
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let sid = "pgw.localdomain;change;1";
    let i = gw.ask(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(BOB)
            .mscc(MsccSpec::ask(20, 2 * MIB)),
    );
    assert_eq!(i.mscc[0].result_code, Some(SUCCESS));
    assert_eq!(level(&api, "bob-personal").1, "0.02");

    // A bad rule is refused whole, with its reason; nothing changes.
    let (status, e) = api.call(
        "PUT",
        "/v1/rules/byod/staff/bob",
        Some(r#"{"rules":[{"name":"ok","charge":"corporate"},{"name":"bad","zones":["mars"],"charge":"deny"}]}"#),
    );
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("zone 'mars'"), "{e}");
    let (_, r) = api.call("GET", "/v1/rules/byod/staff/bob", None);
    assert_eq!(r["rules"][0]["name"], "personal-video");
    assert_eq!(r["personal_account"], "15553000001");
    assert_eq!(r["inherited"][0]["path"], "byod/staff");

    // Video goes on the company from now on: the gateway holding units is asked to
    // re-authorise (RAR), and what it reports of the old grant is the personal account's.
    let (status, r) = api.call(
        "PUT",
        "/v1/rules/byod/staff/bob",
        Some(r#"{"rules":[{"name":"video-on-us","rating_groups":[20],"charge":"corporate"}]}"#),
    );
    assert_eq!(status, 200, "{r}");
    // The RAR is sent once the change is made: waited for (bounded), then answered, before
    // the gateway reports (a report sent at the same moment may be answered first).
    let rar = gw.conn.expect_frame();
    assert!(
        rar.header.is_request() && rar.header.command_code == 258,
        "a RAR came first: {rar:?}"
    );
    gw.conn.send(&answer_of(&rar, "pgw.localdomain", 2001));
    let update = CcrSpec::new(sid, UPDATE, 1)
        .msisdn(BOB)
        .mscc(MsccSpec::report(20, MIB, true));
    let u = gw.ask(&update);
    assert_eq!(u.mscc[0].result_code, Some(SUCCESS));
    assert_eq!(level(&api, "bob-personal"), ("0.01".into(), "0".into()));
    assert_eq!(level(&api, "byod/staff/bob"), (0.into(), (10 * MIB).into()));
    // A retransmission gets the same answer and charges nothing again.
    let mut again = update.clone();
    again.retransmit = true;
    assert_eq!(gw.ask(&again), u);
    assert_eq!(level(&api, "bob-personal"), ("0.01".into(), "0".into()));
    assert_eq!(level(&api, "byod/staff/bob"), (0.into(), (10 * MIB).into()));

    // The rules and the link are account changes: a restart keeps them.
    let (status, _) = api.call("DELETE", "/v1/personal-account/byod/staff/bob", None);
    assert_eq!(status, 200);
    let file = d.config_path().with_file_name("tenants.toml");
    d.terminate();
    let dir = d.into_dir();
    let mut d = Daemon::start_in(
        dir,
        &format!(
            "[charging]\nembedded_tenant = false\ntenant_files = [\"{}\"]\n",
            file.display()
        ),
        &[],
    );
    let api = d.admin();
    let (_, r) = api.call("GET", "/v1/rules/byod/staff/bob", None);
    assert_eq!(r["rules"][0]["name"], "video-on-us", "{r}");
    assert!(r["personal_account"].is_null(), "{r}");
}

#[test]
fn guards_set_by_a_manager_restrict_a_runaway_device_and_refuse_an_absurd_report() {
    let mut d = start(&tenants(""));
    let api = d.admin();
    // Staff: 30 MiB an hour, restricted past it; bob's own sessions at most 1 GiB.
    let (status, v) = api.call(
        "PUT",
        "/v1/guards/byod/staff",
        Some(
            r#"{"velocity_octets":"30 MiB","velocity_window_s":3600,"velocity_action":"restrict"}"#,
        ),
    );
    assert_eq!(status, 200, "{v}");
    let (status, v) = api.call(
        "PUT",
        "/v1/guards/byod/staff/bob",
        Some(r#"{"max_session_octets":"1 GiB"}"#),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["inherited"][0]["guards"]["velocity_octets"], "30 MiB");
    let (status, e) = api.call(
        "PUT",
        "/v1/guards/byod/staff",
        Some(r#"{"velocity_octets":"1 GiB","velocity_window_s":5}"#),
    );
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("between 60"), "{e}");

    let mut gw = Gw::open(&d, "pgw.localdomain");
    let sid = "pgw.localdomain;runaway;1";
    let mut cca = gw.ask(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(BOB)
            .mscc(MsccSpec::rsu(10)),
    );
    let mut granted_total = 0;
    let mut n = 0;
    // At line rate: every grant used at once and reported.
    while cca.mscc[0].final_unit_action.is_none() {
        let g = cca.mscc[0].granted_octets.expect("granted");
        granted_total += g;
        n += 1;
        assert!(n < 10, "never restricted");
        cca = gw.ask(
            &CcrSpec::new(sid, UPDATE, n)
                .msisdn(BOB)
                .mscc(MsccSpec::report(10, g, true)),
        );
    }
    granted_total += cca.mscc[0].granted_octets.unwrap();
    assert_eq!(granted_total, 30 * MIB, "never past the guard");
    assert_eq!(
        cca.mscc[0].final_unit_action,
        Some(2),
        "RESTRICT_ACCESS: {cca:?}"
    );
    let last = cca.mscc[0].granted_octets.unwrap();
    n += 1;
    let after = gw.ask(
        &CcrSpec::new(sid, UPDATE, n)
            .msisdn(BOB)
            .mscc(MsccSpec::report(10, last, true)),
    );
    assert_eq!(after.mscc[0].result_code, Some(4012), "{after:?}");
    let ev = events_of(&api, "kind=velocity_exceeded", 1);
    assert_eq!(
        (&ev[0]["path"], &ev[0]["action"]),
        (&"byod/staff/bob".into(), &"restrict".into())
    );
    let (_, x) = api.call("GET", &format!("/v1/explain/{BOB}?history=0"), None);
    assert!(
        x["decisions"][0]["services"][0]["why"]
            .as_str()
            .unwrap()
            .contains("velocity"),
        "{x}"
    );

    // A report of 40 GiB on what was granted: past bob's session ceiling, refused whole.
    let used_before = level(&api, "byod/staff/bob").0;
    n += 1;
    let absurd = gw.ask(
        &CcrSpec::new(sid, UPDATE, n)
            .msisdn(BOB)
            .mscc(MsccSpec::report(10, 40 << 30, false)),
    );
    assert_eq!(absurd.result_code, 5004, "{absurd:?}");
    assert_eq!(
        level(&api, "byod/staff/bob").0,
        used_before,
        "nothing charged"
    );
    let ev = events_of(&api, "kind=ceiling_tripped", 1);
    assert_eq!(
        (&ev[0]["guard"], &ev[0]["refused"]),
        (&"max_session".into(), &"report".into())
    );
    // ocfctl shows the guards where they are set and inherited.
    let shown = ocfctl(&mut d, &["rules", "byod/staff/bob"]);
    assert!(
        shown.contains("\"max_session_octets\": \"1 GiB\""),
        "{shown}"
    );
    assert!(shown.contains("\"velocity_octets\": \"30 MiB\""), "{shown}");
}

/// `text` served with `config` added (TOML tables), state kept in `dir`.
fn start_in(dir: tempfile::TempDir, text: &str, config: &str) -> Daemon {
    let file = dir.path().join("tenants.toml");
    std::fs::write(&file, text).unwrap();
    Daemon::start_in(
        dir,
        &format!(
            "{config}\n[charging]\nembedded_tenant = false\ntenant_files = [\"{}\"]\n",
            file.display()
        ),
        &[],
    )
}

const ROAMERS: &str = include_str!("common/roamers.toml");

/// The roaming cap of a device as the API shows it: (used, reserved).
fn roaming_cap(api: &Http, device: &str) -> (Value, Value) {
    let (status, node) = api.call("GET", &format!("/v1/nodes/travel/{device}"), None);
    assert_eq!(status, 200, "{node}");
    let l = node["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["class"] == "roaming")
        .unwrap_or_else(|| panic!("no roaming cap: {node}"))
        .clone();
    (l["used"].clone(), l["reserved"].clone())
}

#[test]
fn a_roaming_cap_holds_to_the_cent_across_kill_9_and_a_snapshot_restart() {
    const FSYNC: &str = "[journal]\ndurability = \"fsync\"";
    let dir = tempfile::tempdir().unwrap();
    let mut d = start_in(dir, ROAMERS, FSYNC);
    let mut api = d.admin();
    let device = "15558000003";
    let sid = "pgw.localdomain;roam;1";
    let roaming = |spec: CcrSpec| spec.msisdn(device).serving_network("20801");
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let mut cca = gw.ask(&roaming(CcrSpec::new(sid, INITIAL, 0)).mscc(MsccSpec::rsu(10)));
    let mut n = 0;
    // 30 EUR of roaming data, then the process dies.
    for _ in 0..3 {
        let g = cca.mscc[0].granted_octets.unwrap();
        n += 1;
        cca = gw.ask(&roaming(CcrSpec::new(sid, UPDATE, n)).mscc(MsccSpec::report(10, g, true)));
    }
    assert_eq!(roaming_cap(&api, device), ("30".into(), "10".into()));
    d.kill9();
    let dir = d.into_dir();
    let mut d = start_in(dir, ROAMERS, FSYNC);
    api = d.admin();
    assert_eq!(
        roaming_cap(&api, device),
        ("30".into(), "10".into()),
        "replayed with its class"
    );
    let mut gw = Gw::open(&d, "pgw.localdomain");
    // Granted so far: 30 MiB reported and the 10 MiB held across the crash.
    let mut granted = 40 * MIB;
    while cca.mscc[0].final_unit_action.is_none() {
        let g = cca.mscc[0].granted_octets.unwrap();
        n += 1;
        cca = gw.ask(&roaming(CcrSpec::new(sid, UPDATE, n)).mscc(MsccSpec::report(10, g, true)));
        granted += cca.mscc[0].granted_octets.unwrap_or(0);
        assert!(n < 20, "never cut off");
    }
    assert_eq!(
        granted,
        50 * MIB,
        "50 EUR of roaming data at 1.00 per MiB, no more"
    );
    n += 1;
    let g = cca.mscc[0].granted_octets.unwrap();
    let t =
        gw.ask(&roaming(CcrSpec::new(sid, TERMINATION, n)).mscc(MsccSpec::report(10, g, false)));
    assert_eq!(t.result_code, SUCCESS);
    assert_eq!(
        roaming_cap(&api, device),
        ("50".into(), "0".into()),
        "50.00 EUR exactly"
    );
    let ev = events_of(&api, "kind=threshold_crossed", 1);
    assert!(
        ev.iter().any(|e| e["path"] == format!("travel/{device}")
            && e["threshold"]["percent"] == 80
            && e["class"] == "roaming"
            && e["used"] == 40_000_000_000u64),
        "warned at 80 %: {ev:?}"
    );
    // A graceful stop writes a snapshot; what it holds keeps the class.
    d.terminate();
    let dir = d.into_dir();
    let mut d = start_in(dir, ROAMERS, FSYNC);
    let api = d.admin();
    assert_eq!(roaming_cap(&api, device), ("50".into(), "0".into()));
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let again = gw
        .ask(&roaming(CcrSpec::new("pgw.localdomain;roam;2", INITIAL, 0)).mscc(MsccSpec::rsu(10)));
    assert_eq!(again.mscc[0].result_code, Some(4012), "{again:?}");
}

#[test]
fn a_reload_with_a_bad_rule_takes_none_of_the_file() {
    let mut d = start(&tenants(""));
    let api = d.admin();
    let file = d.config_path().with_file_name("tenants.toml");
    // A good new rule on bob and a bad one on the cost centre: none of it is taken.
    let good = "  [[tenant.node.rules]]\n  name = \"nights\"\n  hours = [\"22:00-06:00\"]\n  charge = \"personal\"\n";
    let bad = tenants(good).replace(
        "  name = \"no-gaming\"\n  rating_groups = [30]",
        "  name = \"no-gaming\"\n  rating_groups = [\"30-3\"]",
    );
    std::fs::write(&file, &bad).unwrap();
    d.proc.signal("HUP");
    let line = d.wait_log("reload refused");
    assert!(line.contains("ends before it starts"), "{line}");
    assert!(line.contains("tenants.toml"), "{line}");
    let (_, r) = api.call("GET", "/v1/rules/byod/staff/bob", None);
    assert_eq!(r["rules"].as_array().unwrap().len(), 1, "unchanged: {r}");
    // The same without the mistake: all of it.
    std::fs::write(&file, tenants(good)).unwrap();
    d.proc.signal("HUP");
    d.wait_log("reloaded");
    let (_, r) = api.call("GET", "/v1/rules/byod/staff/bob", None);
    let names: Vec<&str> = r["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nights", "personal-video"], "{r}");
}
