//! Durability under faults, end to end against the real `ocfd` over TCP (DESIGN.md §6,
//! docs/durability.md): a full disk in every durability mode (refused, never acknowledged
//! falsely, resumed by itself, nothing acknowledged lost across a `kill -9` or a clean stop),
//! missing state files refused before anything is written, SIGTERM under pipelined load (every
//! request answered, nothing refused charged), the admin API's bounds, and start-up errors
//! said once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use ocf_loadtest::gy::{CcaResult, CcrSpec, INITIAL, MsccSpec, TERMINATION, UPDATE};
use serde_json::Value;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

// Helpers -------------------------------------------------------------------------------------

/// MSISDN and account path of device `n` of the embedded tenant (DESIGN.md §7).
fn device(n: u64) -> (String, String) {
    let msisdn = format!("{}", 15_551_000_000 + n);
    let centre = match n {
        8000.. => "iot",
        5000.. => "sales",
        _ => "engineering",
    };
    let path = format!("acme/{centre}/{msisdn}");
    (msisdn, path)
}

/// An MSCC asking for `octets`.
fn ask(octets: u64) -> MsccSpec {
    MsccSpec {
        rating_group: Some(1),
        requested_octets: Some(Some(octets)),
        ..Default::default()
    }
}

/// An MSCC reporting `used` octets, and asking for 256 KiB more if `more`.
fn report(used: u64, more: bool) -> MsccSpec {
    MsccSpec {
        rating_group: Some(1),
        used_octets: Some(used),
        requested_octets: if more { Some(Some(256 * KIB)) } else { None },
        ..Default::default()
    }
}

/// A gateway sending one CCR at a time; every request must be answered within [`WAIT`].
struct Gateway {
    conn: Conn,
    hop: u32,
}

impl Gateway {
    fn open(addr: SocketAddr) -> Gateway {
        let mut conn = Conn::connect(addr);
        assert_eq!(result_code(&conn.handshake("pgw.localdomain")), 2001);
        Gateway { conn, hop: 1 }
    }

    /// The answer's E bit and content.
    fn ask(&mut self, spec: &CcrSpec) -> (bool, CcaResult) {
        self.hop += 1;
        let mut b = BytesMut::new();
        spec.write(&mut b, self.hop, self.hop);
        self.conn.send(&b);
        match self.conn.read(WAIT) {
            Read_::Frame(m) => {
                assert_eq!(
                    (m.header.command_code, m.header.hop_by_hop),
                    (272, self.hop),
                    "{}: not the answer to the request",
                    spec.session_id
                );
                (m.header.flags.is_error(), CcaResult::read(&m))
            }
            other => panic!(
                "{} (CC-Request-Number {}): no answer within {WAIT:?} ({other:?}); every request must be answered",
                spec.session_id, spec.request_number
            ),
        }
    }
}

/// What the gateway was told was charged (CCR-U/T answered 2001).
#[derive(Default)]
struct Acks {
    /// Per account path: octets of reports answered 2001.
    used: BTreeMap<String, u64>,
    /// Sessions whose CCR-T was answered 2001: their account and the octets acknowledged in
    /// them.
    ended: BTreeMap<String, (String, u64)>,
}

/// An open session of the load.
struct Sess {
    sid: String,
    account: String,
    grant: u64,
    number: u32,
    acked: u64,
}

/// Sessions on iot and sales devices: CCR-I asking 256 KiB, CCR-U and CCR-T reporting up to
/// 64 KiB each (never more than was granted), every answer recorded.
struct Load {
    gw: Gateway,
    acks: Acks,
    tag: String,
    count: u64,
}

impl Load {
    const DEVICES: [u64; 12] = [
        8000, 8001, 8002, 8003, 8004, 8005, 5000, 5001, 5002, 5003, 5004, 5005,
    ];

    /// CCR-I; `None` unless answered 2001 (the answer is in `seen`).
    fn open(&mut self, seen: &mut Vec<(u32, bool)>) -> Option<Sess> {
        self.count += 1;
        let n = Self::DEVICES[self.count as usize % Self::DEVICES.len()];
        let (msisdn, account) = device(n);
        let sid = format!("{};{}", self.tag, self.count);
        let (e, i) = self.gw.ask(
            &CcrSpec::new(&sid, INITIAL, 0)
                .msisdn(&msisdn)
                .mscc(ask(256 * KIB)),
        );
        seen.push((i.result_code, e));
        (i.result_code == 2001).then(|| Sess {
            sid,
            account,
            grant: i.mscc.first().and_then(|m| m.granted_octets).unwrap_or(0),
            number: 0,
            acked: 0,
        })
    }

    /// CCR-U reporting up to 64 KiB and asking for more.
    fn update(&mut self, s: &mut Sess, seen: &mut Vec<(u32, bool)>) {
        let used = s.grant.min(64 * KIB);
        s.number += 1;
        let (e, u) = self
            .gw
            .ask(&CcrSpec::new(&s.sid, UPDATE, s.number).mscc(report(used, true)));
        seen.push((u.result_code, e));
        if u.result_code == 2001 {
            *self.acks.used.entry(s.account.clone()).or_default() += used;
            s.acked += used;
            s.grant = u.mscc.first().and_then(|m| m.granted_octets).unwrap_or(0);
        }
    }

    /// CCR-T reporting up to 64 KiB; true if answered 2001 (the session ended).
    fn terminate(&mut self, s: &mut Sess, seen: &mut Vec<(u32, bool)>) -> bool {
        let used = s.grant.min(64 * KIB);
        s.number += 1;
        let (e, t) = self
            .gw
            .ask(&CcrSpec::new(&s.sid, TERMINATION, s.number).mscc(report(used, false)));
        seen.push((t.result_code, e));
        if t.result_code != 2001 {
            return false;
        }
        *self.acks.used.entry(s.account.clone()).or_default() += used;
        s.acked += used;
        self.acks
            .ended
            .insert(s.sid.clone(), (s.account.clone(), s.acked));
        true
    }

    /// A whole session (I, U, T); the answers it got.
    fn session(&mut self) -> Vec<(u32, bool)> {
        let mut seen = Vec::new();
        if let Some(mut s) = self.open(&mut seen) {
            self.update(&mut s, &mut seen);
            self.terminate(&mut s, &mut seen);
        }
        seen
    }
}

/// (used, reserved) octets this month on the node at `path`.
fn octets(api: &Http, path: &str) -> (u64, u64) {
    let (st, v) = api.call("GET", &format!("/v1/usage/{path}"), None);
    assert_eq!(st, 200, "GET /v1/usage/{path}: {v}");
    let l = v["node"]["limits"]
        .as_array()
        .and_then(|ls| {
            ls.iter()
                .find(|l| l["unit"] == "octets" && l["period"] == "month")
        })
        .unwrap_or_else(|| panic!("{path} has no octets limit per month: {v}"))
        .clone();
    (l["used"].as_u64().unwrap(), l["reserved"].as_u64().unwrap())
}

/// Every acknowledged octet is in the ledger and the invariant holds on every node of acme
/// the API shows (no test reports usage beyond a grant). Returns the used octets per account
/// of `acks`.
fn check_ledger(api: &Http, acks: &Acks, ctx: &str) -> BTreeMap<String, u64> {
    let mut used = BTreeMap::new();
    for (account, acked) in &acks.used {
        let (u, _) = octets(api, account);
        assert!(
            u >= *acked,
            "{ctx}: {account}: the ledger has {u} octets used, {acked} were acknowledged (2001)"
        );
        used.insert(account.clone(), u);
    }
    assert!(!used.is_empty(), "{ctx}: nothing was acknowledged");
    let mut nodes = 0;
    for path in ["acme", "acme/iot", "acme/sales", "acme/engineering"] {
        let (st, v) = api.call("GET", &format!("/v1/usage/{path}"), None);
        assert_eq!(st, 200, "{ctx}: GET /v1/usage/{path}: {v}");
        let children = v["children"].as_array().cloned().unwrap_or_default();
        for n in std::iter::once(&v["node"]).chain(children.iter()) {
            for l in n["limits"].as_array().into_iter().flatten() {
                let (Some(u), Some(r), Some(lim)) = (
                    l["used"].as_u64(),
                    l["reserved"].as_u64(),
                    l["limit"].as_u64(),
                ) else {
                    continue;
                };
                assert!(
                    u + r <= lim,
                    "{ctx}: {}: used {u} + reserved {r} > limit {lim}",
                    n["path"]
                );
                nodes += 1;
            }
        }
    }
    assert!(nodes > 1000, "{ctx}: only {nodes} limits shown");
    used
}

/// Reads every usage record (state/usage/*.jsonl) and checks them against what was
/// acknowledged: every line a JSON object starting with its journal sequence (each once);
/// every session whose CCR-T was answered 2001 has one final record with at least the octets
/// acknowledged in it; per account the final records add up to at least what ended sessions
/// were acknowledged and at most what the ledger holds as used.
fn check_usage(
    state: &Path,
    acks: &Acks,
    ledger_used: &BTreeMap<String, u64>,
) -> Result<usize, String> {
    let dir = state.join("usage");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let mut seqs = BTreeSet::new();
    let mut finals: BTreeMap<String, (String, u64)> = BTreeMap::new();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        for (i, line) in text.lines().enumerate() {
            let at = format!("{} line {}", f.display(), i + 1);
            if !line.starts_with("{\"seq\":") {
                return Err(format!("{at} does not start with {{\"seq\":: {line}"));
            }
            let v: Value = serde_json::from_str(line).map_err(|e| format!("{at}: {e}: {line}"))?;
            let seq = v["seq"].as_u64().ok_or(format!("{at}: no seq"))?;
            if !seqs.insert(seq) {
                return Err(format!("{at}: sequence {seq} written twice"));
            }
            if v["interim"] != Value::Bool(false) {
                continue;
            }
            let sid = v["session_id"]
                .as_str()
                .ok_or(format!("{at}: no session_id"))?;
            let account = v["account"].as_str().ok_or(format!("{at}: no account"))?;
            let octets: u64 = v["services"]
                .as_array()
                .ok_or(format!("{at}: no services"))?
                .iter()
                .map(|s| s["octets"].as_u64().unwrap_or(0))
                .sum();
            if finals
                .insert(sid.to_owned(), (account.to_owned(), octets))
                .is_some()
            {
                return Err(format!("{at}: a second final record of session {sid}"));
            }
        }
    }
    let mut acked_per_account: BTreeMap<&str, u64> = BTreeMap::new();
    for (sid, (account, acked)) in &acks.ended {
        let Some((a, o)) = finals.get(sid) else {
            return Err(format!(
                "no usage record of session {sid}, whose CCR-T was answered 2001 ({} records in {} files)",
                finals.len(),
                files.len()
            ));
        };
        if a != account || o < acked {
            return Err(format!(
                "session {sid}: usage record says {a} {o} octets; acknowledged {account} {acked}"
            ));
        }
        *acked_per_account.entry(account).or_default() += acked;
    }
    let mut recorded: BTreeMap<&str, u64> = BTreeMap::new();
    for (account, o) in finals.values() {
        *recorded.entry(account).or_default() += o;
    }
    for (account, acked) in &acked_per_account {
        let r = recorded.get(account).copied().unwrap_or(0);
        if r < *acked {
            return Err(format!(
                "{account}: usage records add up to {r} octets, ended sessions were acknowledged {acked}"
            ));
        }
        if let Some(u) = ledger_used.get(*account) {
            if r > *u {
                return Err(format!(
                    "{account}: usage records add up to {r} octets, more than the ledger's {u}"
                ));
            }
        }
    }
    Ok(finals.len())
}

/// Waits (bounded) until the usage records pass [`check_usage`] (the follower catches up with
/// the journal after a start).
fn wait_usage(state: &Path, acks: &Acks, used: &BTreeMap<String, u64>, ctx: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        match check_usage(state, acks, used) {
            Ok(_) => return,
            Err(e) if Instant::now() >= deadline => panic!("{ctx}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Waits (bounded) for /ready to answer `want`.
fn wait_ready(api: &Http, want: u16, ctx: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (st, v) = api.call("GET", "/ready", None);
        if st == want {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{ctx}: /ready still answers {st} {v} after {WAIT:?}, not {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) until a refresh of the gauges made after this call shows no journal lag.
fn wait_journal_written(d: &mut Daemon, api: &Http, ctx: &str) {
    wait_gauges(d, api, ctx, |m| m("ocfd_journal_lag_records") == Some(0.0));
}

/// Waits (bounded) until a refresh of the gauges made after this call shows the usage records
/// synced up to everything the journal has written.
fn wait_usage_synced(d: &mut Daemon, api: &Http, ctx: &str) {
    wait_gauges(d, api, ctx, |m| {
        let written = m("ocfd_journal_written_sequence");
        m("ocfd_journal_lag_records") == Some(0.0)
            && written.is_some()
            && m("ocfd_usage_records_synced_sequence") >= written
    });
}

/// Waits (bounded) for a refresh of the gauges, after this call, for which `ok` holds.
fn wait_gauges(
    d: &mut Daemon,
    api: &Http,
    ctx: &str,
    ok: impl Fn(&dyn Fn(&str) -> Option<f64>) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        // The gauges are refreshed just before each "supervision tick" line.
        let ticks = d
            .proc
            .logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("supervision tick"))
            .count();
        d.proc.wait_count("supervision tick", ticks + 1, WAIT);
        let c = ocf::ctl::http::Client {
            addr: api.addr,
            token: None,
            timeout: WAIT,
        };
        let body = c.call("GET", "/metrics", None).unwrap().body;
        let m = |name: &str| -> Option<f64> {
            body.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|r| r.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
        };
        if ok(&m) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{ctx}: the gauges never showed what was waited for:\n{body}"
        );
    }
}

/// Start-up output that says the journal did not read back.
fn assert_clean_start(d: &Daemon, ctx: &str) {
    let out = d.proc.output();
    for bad in ["was expected", "checksum", "is missing", "are missing"] {
        assert!(!out.contains(bad), "{ctx}: the start said {bad:?}:\n{out}");
    }
}

// A: a full disk, in each durability mode -----------------------------------------------------

fn full_disk(mode: &str) {
    let fs = Tmpfs::mount(16);
    let state = fs.point.clone();
    let cfg = format!(
        // No overload shedding: on a busy test machine a healthy request may wait longer than
        // the default 2 ms, and this test is about the disk, not about overload. The queue
        // admits 768 records (3/4 of 1024) before it refuses: more than the healthy phase
        // makes in all (36 sessions, at most 8 records each), so no refusal there can come of
        // a writer thread the machine has not scheduled yet; and fewer than the full phase's
        // 300 sessions make, so the backlog refusal it waits for must come.
        "overload_queue_us = 0\n[journal]\ndurability = \"{mode}\"\nsegment_mib = 1\nusage_records = true\nqueue_records = 1024\ndurable_timeout_ms = 1000\n"
    );
    let mut d = Daemon::start_in_state(tempfile::tempdir().unwrap(), &state, &cfg, &[]);
    let api = d.admin();
    let mut load = Load {
        gw: Gateway::open(d.addr),
        acks: Acks::default(),
        tag: format!("full-{mode}"),
        count: 0,
    };
    let strict = mode != "async";

    // Healthy: everything is answered 2001; some sessions stay open for reports while full.
    for _ in 0..30 {
        let seen = load.session();
        assert!(
            seen.iter().all(|(rc, _)| *rc == 2001),
            "{mode}: healthy: {seen:?}"
        );
    }
    let mut held = Vec::new();
    for _ in 0..6 {
        let mut seen = Vec::new();
        held.push(load.open(&mut seen).expect("a session opens"));
    }

    // The disk fills up; requests go on until the journal's write fails.
    let filler = state.join("filler");
    fill(&filler);
    let started = Instant::now();
    let mut sessions = 0;
    while !d.proc.saw_within("journal write failed", Duration::ZERO) {
        assert!(
            sessions < 500 && started.elapsed() < WAIT,
            "{mode}: no \"journal write failed\" after {sessions} sessions on a full disk:\n{}",
            d.proc.output()
        );
        for (rc, e) in load.session() {
            assert!(
                rc == 2001 || (rc == 3004 && e),
                "{mode}: filling: answered {rc} (E bit {e})"
            );
        }
        sessions += 1;
    }
    // Whatever a cut-back write gave back is taken too.
    fill(&filler);
    let failed = d.wait_log("journal write failed");
    assert!(
        failed.contains("No space left on device"),
        "{mode}: the log does not name the cause: {failed}"
    );
    let v = wait_ready(&api, 503, &format!("{mode}: full"));
    assert!(
        v["status"].as_str().is_some_and(|s| s.contains("journal")),
        "{mode}: /ready: {v}"
    );

    // While full: reports of the open sessions and new sessions; every request is answered,
    // in write and fsync modes with 3004 (E bit), never 2001.
    let mut seen = Vec::new();
    for s in held.iter_mut() {
        load.update(s, &mut seen);
        load.terminate(s, &mut seen);
    }
    for _ in 0..10 {
        seen.extend(load.session());
    }
    if !strict {
        // Answers do not wait for the disk: records queue up until the backlog refuses more.
        let mut more = 0;
        while !seen.iter().any(|(rc, _)| *rc == 3004) {
            assert!(
                more < 300,
                "{mode}: no backlog refusal (3004) after {more} more sessions on a full disk"
            );
            seen.extend(load.session());
            more += 1;
        }
    }
    for (rc, e) in &seen {
        if strict {
            assert!(
                *rc == 3004 && *e,
                "{mode}: while the journal cannot be written: answered {rc} (E bit {e}); all: {seen:?}"
            );
        } else {
            assert!(
                *rc == 2001 || (*rc == 3004 && *e),
                "{mode}: while full: answered {rc} (E bit {e})"
            );
        }
    }
    let (st, v) = api.call("GET", "/ready", None);
    assert_eq!(st, 503, "{mode}: /ready while still full: {v}");
    eprintln!(
        "{mode}: {sessions} sessions until the write failed; while full: {} answered 2001, {} 3004",
        seen.iter().filter(|(rc, _)| *rc == 2001).count(),
        seen.iter().filter(|(rc, _)| *rc == 3004).count()
    );

    // Room again: ocfd resumes by itself.
    std::fs::remove_file(&filler).unwrap();
    wait_ready(&api, 200, &format!("{mode}: after the disk was freed"));
    d.wait_log("journal writes succeed again");
    for s in held.iter_mut() {
        if load.acks.ended.contains_key(&s.sid) {
            continue;
        }
        let mut seen = Vec::new();
        assert!(
            load.terminate(s, &mut seen),
            "{mode}: after the disk was freed: {seen:?}"
        );
    }
    // The backlog queued while full is written after the first retry succeeds; until it is,
    // admission may still refuse (a busy machine can leave the writer unscheduled for
    // milliseconds after "journal writes succeed again"). Once it is: everything is admitted.
    wait_journal_written(&mut d, &api, mode);
    for _ in 0..20 {
        let seen = load.session();
        assert!(
            seen.iter().all(|(rc, _)| *rc == 2001),
            "{mode}: after the disk was freed, requests must be admitted again: {seen:?}"
        );
    }

    // (a) kill -9 and restart: every acknowledged octet is there.
    if mode == "async" {
        wait_journal_written(&mut d, &api, mode);
    }
    drop(load.gw);
    d.kill9();
    let mut d = Daemon::start_in_state(d.into_dir(), &state, &cfg, &[]);
    d.wait_log("journal replayed");
    assert_clean_start(&d, &format!("{mode}: restart after kill -9"));
    let api = d.admin();
    let used = check_ledger(&api, &load.acks, &format!("{mode}: after kill -9"));
    wait_usage(&state, &load.acks, &used, &format!("{mode}: after kill -9"));

    // (b) a clean stop and start.
    assert!(d.terminate().success(), "{mode}: {}", d.proc.output());
    let ended = check_usage(&state, &load.acks, &used)
        .unwrap_or_else(|e| panic!("{mode}: after a clean stop: {e}"));
    assert!(ended >= load.acks.ended.len());
    let mut d = Daemon::start_in_state(d.into_dir(), &state, &cfg, &[]);
    d.wait_log("journal replayed");
    assert_clean_start(&d, &format!("{mode}: restart after a clean stop"));
    let api = d.admin();
    check_ledger(&api, &load.acks, &format!("{mode}: after a clean stop"));
    let mut gw = Gateway::open(d.addr);
    let (_, r) = gw.ask(
        &CcrSpec::new(format!("{mode};last"), INITIAL, 0)
            .msisdn(&device(8100).0)
            .mscc(ask(MIB)),
    );
    assert_eq!(r.result_code, 2001, "{mode}: serving after the restarts");
    assert!(d.terminate().success(), "{mode}: {}", d.proc.output());
    drop(fs);
}

#[test]
fn a_full_disk_in_async_mode_loses_nothing_acknowledged_and_recovers() {
    full_disk("async");
}

#[test]
fn a_full_disk_in_write_mode_is_refused_3004_and_recovers() {
    full_disk("write");
}

#[test]
fn a_full_disk_in_fsync_mode_is_refused_3004_and_recovers() {
    full_disk("fsync");
}

// B: missing files ----------------------------------------------------------------------------

const SEGMENTED: &str = "[journal]\nsegment_mib = 1\nsnapshot_interval_s = 0\n";

/// Writes `specs` pipelined on `conn` and reads one answer for each (a pipelining gateway may
/// be shed, 3004, under overload: this only makes journal records).
fn pipeline(conn: &mut Conn, hop: &mut u32, specs: &[CcrSpec]) {
    let mut out = BytesMut::new();
    let first = *hop + 1;
    for s in specs {
        *hop += 1;
        s.write(&mut out, *hop, *hop);
    }
    conn.send(&out);
    for k in 0..specs.len() as u32 {
        match conn.read(WAIT) {
            Read_::Frame(m) => {
                assert_eq!(m.header.hop_by_hop, first + k);
                let r = CcaResult::read(&m);
                assert!([2001, 3004, 5002].contains(&r.result_code), "{r:?}");
            }
            other => panic!("no answer: {other:?}"),
        }
    }
}

fn segments(journal: &Path) -> Vec<(u64, PathBuf)> {
    ocf_store::segment::list(journal).unwrap()
}

/// Sessions (CCR-I, CCR-T) with long Session-Ids on sales devices until the journal has at
/// least `want` segments.
fn grow_journal(addr: SocketAddr, state: &Path, want: usize, tag: &str) {
    let mut conn = Conn::connect(addr);
    assert_eq!(result_code(&conn.handshake("pgw.localdomain")), 2001);
    let mut hop = 1;
    let pad = "x".repeat(400);
    let started = Instant::now();
    let mut n = 0u64;
    while segments(&state.join("journal")).len() < want {
        assert!(
            started.elapsed() < 3 * WAIT && n < 200_000,
            "{tag}: the journal has not grown to {want} segments after {n} sessions"
        );
        let mut specs = Vec::new();
        for _ in 0..32 {
            n += 1;
            let sid = format!("{tag};{pad};{n}");
            let msisdn = device(5000 + n % 1000).0;
            specs.push(
                CcrSpec::new(&sid, INITIAL, 0)
                    .msisdn(&msisdn)
                    .mscc(ask(MIB)),
            );
            specs.push(CcrSpec::new(&sid, TERMINATION, 1).mscc(report(KIB, false)));
        }
        pipeline(&mut conn, &mut hop, &specs);
    }
}

/// A state directory (in the returned directory's `state`, its config `ocfd.toml`) holding a
/// snapshot from a clean stop that removed older segments, and three or more 1 MiB segments
/// after it (the process then killed).
fn segmented_state() -> tempfile::TempDir {
    let mut d = Daemon::start(SEGMENTED);
    let state = d.state_path();
    grow_journal(d.addr, &state, 3, "before");
    // Segments go once their usage records are synced too (the follower syncs each second).
    let api = d.admin();
    wait_usage_synced(&mut d, &api, "before the stop");
    assert!(d.terminate().success(), "{}", d.proc.output());
    let left = segments(&state.join("journal"));
    assert_eq!(
        left.len(),
        1,
        "the stop's snapshot removes the segments it covers: {left:?}"
    );
    assert!(left[0].0 > 1, "older segments were removed: {left:?}");
    let mut d = Daemon::start_in(d.into_dir(), SEGMENTED, &[]);
    grow_journal(d.addr, &state, 4, "after");
    // Everything queued is written before the kill: a segment the writer started is then
    // in the manifest (it is named there before the first write into it).
    let api = d.admin();
    wait_gauges(&mut d, &api, "before the kill", |m| {
        m("ocfd_journal_lag_records") == Some(0.0)
    });
    d.kill9();
    d.into_dir()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Every file under `dir` with its size.
fn listing(dir: &Path) -> BTreeMap<PathBuf, u64> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, u64>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            if e.file_type().unwrap().is_dir() {
                out.insert(rel.join(""), 0);
                walk(root, &path, out);
            } else {
                out.insert(rel, e.metadata().unwrap().len());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Starts ocfd on `state` with `config`, expects it to refuse (a non-zero exit, bounded) and
/// to change nothing under `state`; returns its `ocfd: ` line.
fn refused_start(config: &Path, state: &Path) -> String {
    let before = listing(state);
    let mut p = Watched::spawn("ocfd", {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ocfd"));
        c.arg("--config").arg(config).arg("--state-dir").arg(state);
        c
    });
    let status = p.wait_exit(WAIT);
    let out = p.output();
    assert!(!status.success(), "ocfd started:\n{out}");
    assert!(!out.contains("listening"), "{out}");
    let after = listing(state);
    assert_eq!(
        before, after,
        "the refused start changed the state directory:\n{out}"
    );
    let said: Vec<&str> = out.lines().filter(|l| l.starts_with("ocfd: ")).collect();
    assert_eq!(said.len(), 1, "one `ocfd: ` line expected:\n{out}");
    eprintln!("refused: {}", said[0]);
    said[0].to_owned()
}

fn snapshot_sequence(state: &Path) -> u64 {
    let path = state.join("snapshot");
    let data = std::fs::read(&path).unwrap();
    ocf_store::snapshot::header(&data, &path)
        .unwrap()
        .info
        .sequence
}

#[test]
fn missing_segments_or_snapshot_are_refused_and_repair_accepts_a_lost_last_segment() {
    let fixture = segmented_state();
    let config = fixture.path().join("ocfd.toml");
    let original = fixture.path().join("state");
    let after = snapshot_sequence(&original);
    let segs = segments(&original.join("journal"));
    let manifest = std::fs::read_to_string(original.join("journal/manifest")).unwrap();
    let current: u64 = manifest
        .lines()
        .find_map(|l| l.strip_prefix("current "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("manifest: {manifest:?}"));
    assert_eq!(
        segs.last().map(|s| s.0),
        Some(current),
        "the manifest names the last segment"
    );

    // 1. The segment that follows the snapshot.
    let work = tempfile::tempdir().unwrap();
    let case = work.path().join("follows");
    copy_dir(&original, &case);
    let (first, _) = segs
        .iter()
        .rev()
        .find(|(f, _)| *f <= after + 1)
        .unwrap_or_else(|| panic!("no segment holds {}: {segs:?}", after + 1));
    assert_ne!(
        *first, current,
        "more segments follow the one after the snapshot"
    );
    let gone = ocf_store::segment::segment_path(&case.join("journal"), *first);
    std::fs::remove_file(&gone).unwrap();
    let said = refused_start(&config, &case);
    assert!(said.contains("missing"), "1: {said}");

    // 2. The snapshot, whose stop removed the segments before it.
    let case = work.path().join("snapshot");
    copy_dir(&original, &case);
    assert!(segs[0].0 > 1, "older segments were removed: {segs:?}");
    std::fs::remove_file(case.join("snapshot")).unwrap();
    let said = refused_start(&config, &case);
    assert!(said.contains("missing"), "2: {said}");

    // 3. The last segment, named in the manifest.
    let case = work.path().join("last");
    copy_dir(&original, &case);
    let last = ocf_store::segment::segment_path(&case.join("journal"), current);
    std::fs::remove_file(&last).unwrap();
    let said = refused_start(&config, &case);
    assert!(
        said.contains(&last.display().to_string()) && said.contains("missing"),
        "3: the message names {}: {said}",
        last.display()
    );

    // 5. `journal repair` accepts the loss: the next start works.
    let repair = Command::new(env!("CARGO_BIN_EXE_ocfd"))
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(&case)
        .args(["journal", "repair"])
        .output()
        .unwrap();
    assert!(
        repair.status.success(),
        "journal repair: {}{}",
        String::from_utf8_lossy(&repair.stdout),
        String::from_utf8_lossy(&repair.stderr)
    );
    let mut d = Daemon::start_in_state(tempfile::tempdir().unwrap(), &case, SEGMENTED, &[]);
    d.wait_log("journal replayed");
    let mut gw = Gateway::open(d.addr);
    let (_, r) = gw.ask(
        &CcrSpec::new("after-repair", INITIAL, 0)
            .msisdn(&device(8500).0)
            .mscc(ask(MIB)),
    );
    assert_eq!(r.result_code, 2001, "{r:?}");
    assert!(d.terminate().success(), "{}", d.proc.output());
}

#[test]
fn a_damaged_snapshot_is_refused_by_name_and_nothing_changes() {
    // The snapshot is read on a thread while the accounts are rebuilt: whatever is wrong with
    // it is still found, and said, before anything is written.
    let fixture = segmented_state();
    let config = fixture.path().join("ocfd.toml");
    let original = fixture.path().join("state");
    let work = tempfile::tempdir().unwrap();
    let snapshot = |case: &Path| std::fs::read(case.join("snapshot")).unwrap();
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, &str, Damage); 4] = [
        ("flipped", "checksum mismatch", |d| {
            let mid = d.len() / 2;
            d[mid] ^= 0x20;
        }),
        ("cut", "checksum mismatch", |d| d.truncate(d.len() - 100)),
        ("header", "not a snapshot", |d| d[0] = b'X'),
        ("tiny", "not a snapshot", |d| d.truncate(7)),
    ];
    for (name, reason, damage) in cases {
        for without_changes in [false, true] {
            let case = work.path().join(format!("{name}-{without_changes}"));
            copy_dir(&original, &case);
            let mut data = snapshot(&case);
            damage(&mut data);
            std::fs::write(case.join("snapshot"), &data).unwrap();
            if without_changes {
                // The missing change log would be refused too: the snapshot is named first.
                std::fs::remove_file(case.join("changes")).unwrap();
            }
            let said = refused_start(&config, &case);
            assert!(
                said.contains(reason) && said.contains("snapshot"),
                "{name}, change log removed {without_changes}: {said}"
            );
            assert_eq!(
                snapshot(&case),
                data,
                "{name}: the snapshot is left as it was"
            );
        }
    }
    // And the undamaged state starts from it.
    let case = work.path().join("intact");
    copy_dir(&original, &case);
    let mut d = Daemon::start_in_state(tempfile::tempdir().unwrap(), &case, SEGMENTED, &[]);
    d.wait_log("snapshot loaded");
    assert!(d.terminate().success(), "{}", d.proc.output());
}

#[test]
fn a_missing_change_log_is_refused_and_not_recreated() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let (st, v) = api.call(
        "POST",
        "/v1/tenants",
        Some(r#"{"name":"initech","limits":[{"unit":"octets","amount":"10 GiB"}]}"#),
    );
    assert_eq!(st, 201, "{v}");
    let (st, v) = api.call(
        "PUT",
        "/v1/limits/acme/iot",
        Some(r#"{"limits":[{"unit":"octets","period":"month","amount":"2 GiB"}]}"#),
    );
    assert_eq!(st, 200, "{v}");
    let mut gw = Gateway::open(d.addr);
    let (_, r) = gw.ask(
        &CcrSpec::new("changes;1", INITIAL, 0)
            .msisdn(&device(8000).0)
            .mscc(ask(MIB)),
    );
    assert_eq!(r.result_code, 2001);
    drop(gw);
    assert!(d.terminate().success(), "{}", d.proc.output());
    let state = d.state_path();
    let config = d.config_path();
    let changes = state.join("changes");
    std::fs::remove_file(&changes).unwrap();
    let said = refused_start(&config, &state);
    assert!(
        said.contains(&changes.display().to_string()),
        "the message names {}: {said}",
        changes.display()
    );
    assert!(!changes.exists(), "the refused start made a new change log");
    drop(d);
}

// C: SIGTERM under pipelined load -------------------------------------------------------------

/// What one connection saw.
#[derive(Debug, Default)]
struct Pipelined {
    sent: u64,
    ok: u64,
    busy: u64,
    /// Octets of reports answered 2001.
    acked: u64,
    dpr: bool,
}

/// A gateway on device `n` pipelining 32 CCRs at a time (a session each: I, 30 U, T) until
/// ocfd's DPR; tells `started` after its first batches.
fn pipelined_gateway(addr: SocketAddr, c: usize, n: u64, started: mpsc::Sender<()>) -> Pipelined {
    let host = format!("pgw{c}.localdomain");
    let mut conn = Conn::connect(addr);
    assert_eq!(result_code(&conn.handshake(&host)), 2001);
    let id = identity(&host);
    let msisdn = device(n).0;
    let mut seen = Pipelined::default();
    let mut hop = 100u32;
    let begun = Instant::now();
    for batch in 0..2000u32 {
        if seen.dpr {
            break;
        }
        assert!(
            begun.elapsed() < WAIT,
            "connection {c}: no DPR after {batch} batches"
        );
        if batch == 3 {
            let _ = started.send(());
        }
        let sid = format!("term;{c};{batch}");
        let mut inflight: BTreeMap<u32, u64> = BTreeMap::new();
        let mut out = BytesMut::new();
        for k in 0..32u32 {
            let (spec, used) = match k {
                0 => (
                    CcrSpec::new(&sid, INITIAL, 0)
                        .msisdn(&msisdn)
                        .mscc(ask(MIB)),
                    0,
                ),
                31 => (
                    CcrSpec::new(&sid, TERMINATION, k).mscc(report(1000 + u64::from(k), false)),
                    1000 + u64::from(k),
                ),
                _ => (
                    CcrSpec::new(&sid, UPDATE, k).mscc(report(1000 + u64::from(k), true)),
                    1000 + u64::from(k),
                ),
            };
            let spec = CcrSpec {
                origin_host: host.clone(),
                ..spec
            };
            hop += 1;
            spec.write(&mut out, hop, hop);
            inflight.insert(hop, used);
        }
        conn.send(&out);
        seen.sent += 32;
        while !inflight.is_empty() {
            match conn.read(WAIT) {
                Read_::Frame(m) if m.header.flags.is_request() => match m.header.command_code {
                    282 => {
                        let mut dpa = BytesMut::new();
                        id.write_dpa(&mut dpa, &m.header);
                        conn.send(&dpa);
                        seen.dpr = true;
                    }
                    280 => {
                        let mut dwa = BytesMut::new();
                        id.write_dwa(&mut dwa, &m.header);
                        conn.send(&dwa);
                    }
                    other => panic!("connection {c}: unexpected request {other}"),
                },
                Read_::Frame(m) => {
                    assert_eq!(m.header.command_code, 272, "connection {c}");
                    let used = inflight.remove(&m.header.hop_by_hop).unwrap_or_else(|| {
                        panic!(
                            "connection {c}: an answer to no request ({})",
                            m.header.hop_by_hop
                        )
                    });
                    let r = CcaResult::read(&m);
                    match r.result_code {
                        2001 => {
                            seen.ok += 1;
                            seen.acked += used;
                        }
                        3004 => {
                            assert!(
                                m.header.flags.is_error(),
                                "connection {c}: 3004 without E bit"
                            );
                            seen.busy += 1;
                        }
                        other => panic!("connection {c}: answered {other}: {r:?}"),
                    }
                }
                other => panic!(
                    "connection {c}: {} of its requests unanswered (DPR seen: {}): {other:?}",
                    inflight.len(),
                    seen.dpr
                ),
            }
        }
    }
    assert!(seen.dpr, "connection {c}: no DPR");
    conn.expect_closed();
    seen
}

#[test]
fn sigterm_under_pipelined_load_answers_every_request_and_charges_only_2001() {
    const CFG: &str = "[journal]\ndurability = \"write\"\n";
    let mut d = Daemon::start(CFG);
    let (tx, rx) = mpsc::channel();
    let addr = d.addr;
    let gateways: Vec<_> = (0..4)
        .map(|c| {
            let tx = tx.clone();
            std::thread::spawn(move || pipelined_gateway(addr, c, 5200 + c as u64, tx))
        })
        .collect();
    for _ in 0..gateways.len() {
        rx.recv_timeout(WAIT)
            .expect("every gateway got its first batches answered");
    }
    d.proc.signal("TERM");
    let seen: Vec<Pipelined> = gateways.into_iter().map(|g| g.join().unwrap()).collect();
    let status = d.proc.wait_exit(WAIT);
    assert!(status.success(), "{status}: {}", d.proc.output());
    let mut d = Daemon::start_in(d.into_dir(), CFG, &[]);
    let api = d.admin();
    for (c, s) in seen.iter().enumerate() {
        assert_eq!(s.ok + s.busy, s.sent, "connection {c}: {s:?}");
        let (used, _) = octets(&api, &device(5200 + c as u64).1);
        assert_eq!(
            used, s.acked,
            "connection {c}: the ledger's used octets against the reports answered 2001 ({s:?})"
        );
    }
    let total: u64 = seen.iter().map(|s| s.ok).sum();
    assert!(total > 0, "{seen:?}");
    eprintln!(
        "answered 2001: {}, 3004: {}",
        total,
        seen.iter().map(|s| s.busy).sum::<u64>()
    );
    assert!(d.terminate().success());
}

// D: admin API bounds -------------------------------------------------------------------------

#[test]
fn tenant_names_are_bounded_and_devices_are_leaves() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let tenant = |name: &str| format!(r#"{{"name":"{name}"}}"#);
    let huge = "h".repeat(1 << 20);
    let (st, v) = api.call("POST", "/v1/tenants", Some(&tenant(&huge)));
    assert_eq!(
        st,
        400,
        "a 1 MiB name: {}",
        &v.to_string()[..v.to_string().len().min(300)]
    );
    let long = "l".repeat(129);
    let (st, v) = api.call("POST", "/v1/tenants", Some(&tenant(&long)));
    assert_eq!(st, 400, "a 129-octet name: {v}");
    let fits = "f".repeat(128);
    let (st, v) = api.call("POST", "/v1/tenants", Some(&tenant(&fits)));
    assert_eq!(st, 201, "a 128-octet name: {v}");
    let (st, v) = api.call("GET", "/v1/tenants", None);
    assert_eq!(st, 200);
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&fits.as_str()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.len() > 128),
        "a refused name was added"
    );

    let (st, v) = api.call("POST", "/v1/nodes/acme/iot/15551008003/child", Some("{}"));
    assert_eq!(st, 409, "a child under a device: {v}");
    let (st, v) = api.call("GET", "/v1/nodes/acme/iot/15551008003", None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["children"], serde_json::json!([]), "{v}");
    let (st, _) = api.call("GET", "/v1/nodes/acme/iot/15551008003/child", None);
    assert_eq!(st, 404);
}

// E: a start-up error is said once ------------------------------------------------------------

#[test]
fn a_corrupt_record_is_named_once() {
    let mut d = Daemon::start("");
    let mut gw = Gateway::open(d.addr);
    for k in 0..10 {
        let (_, r) = gw.ask(
            &CcrSpec::new(format!("corrupt;{k}"), INITIAL, 0)
                .msisdn(&device(8200 + k).0)
                .mscc(ask(MIB)),
        );
        assert_eq!(r.result_code, 2001);
    }
    drop(gw);
    assert!(d.terminate().success());
    let state = d.state_path();
    let config = d.config_path();
    let (_, seg) = segments(&state.join("journal"))
        .into_iter()
        .next()
        .expect("a segment");
    let mut data = std::fs::read(&seg).unwrap();
    data[16 + 30] ^= 0x40; // inside the first record
    std::fs::write(&seg, &data).unwrap();
    let said = refused_start(&config, &state);
    let path = seg.display().to_string();
    assert_eq!(
        said.matches(&path).count(),
        1,
        "the segment's path exactly once: {said}"
    );
    assert!(said.contains("checksum mismatch"), "{said}");
    drop(d);
}
