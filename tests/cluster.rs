//! ocfd nodes over NATS JetStream, end to end: real `nats-server`s in a cluster of three on
//! loopback, real ocfd processes, real Diameter. One node owns the partition, the others stand
//! by with a copy kept from its log; when the owner is killed (SIGKILL) or stops, a standby
//! takes over from an empty disk, and sessions opened on the dead owner carry on, charged once.

mod common;
#[path = "../crates/cluster/tests/common/mod.rs"]
mod nats;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use ocf_loadtest::gy::{CcaResult, CcrSpec, INITIAL, MsccSpec, TERMINATION, UPDATE};

const MIB: u64 = 1024 * 1024;
const WAIT: Duration = Duration::from_secs(60);

/// One ocfd node of the cluster: a real process with its own state directory.
struct Node {
    proc: Watched,
    name: String,
    /// Its configuration and state, removed with it.
    _dir: tempfile::TempDir,
    /// Where its router takes gateways.
    gateways: SocketAddr,
    /// The operator's token.
    token_file: std::path::PathBuf,
}

impl Node {
    /// Starts node `name` against `nats` with `extra` TOML appended (e.g. a [journal] table).
    fn start(name: &str, nats: &nats::Nats, extra: &str) -> Node {
        let urls: Vec<String> = nats.servers.iter().map(|s| s.url()).collect();
        Node::start_via(name, &urls, extra)
    }

    /// Starts node `name` reaching NATS at `urls` (through a proxy the test can cut).
    fn start_via(name: &str, urls: &[String], extra: &str) -> Node {
        Node::start_in(name, urls, None, extra, None)
    }

    /// [`Node::start_via`] with the operator's token in `token_file` (else its own, made in
    /// its state directory) and its state in `state` (else its own directory's `state`).
    fn start_in(
        name: &str,
        urls: &[String],
        token_file: Option<&std::path::Path>,
        extra: &str,
        state: Option<&std::path::Path>,
    ) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let state = state.map_or_else(|| dir.path().join("state"), std::path::Path::to_path_buf);
        let token_file =
            token_file.map_or_else(|| state.join("admin-token"), std::path::Path::to_path_buf);
        let servers: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
        let cfg = dir.path().join("ocfd.toml");
        std::fs::write(
            &cfg,
            format!(
                "state_dir = \"{}\"\nworker_threads = 2\n[log]\nlevel = \"info\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n[diameter]\nlisten_tcp = [\"127.0.0.1:0\"]\norigin_host = \"{name}.localdomain\"\n[cluster]\nenabled = true\nnode_name = \"{name}\"\nnats_servers = [{}]\n{extra}\n",
                state.display(),
                token_file.display(),
                servers.join(", ")
            ),
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ocfd"));
        cmd.arg("--config").arg(&cfg);
        let mut proc = Watched::spawn(name, cmd);
        let gateways = logged_addr(&proc.wait_for("routing gateways", WAIT));
        proc.wait_for("standing by", WAIT);
        Node {
            proc,
            name: name.to_owned(),
            _dir: dir,
            gateways,
            token_file,
        }
    }

    /// Waits until its engine serves a partition; the engine's Diameter address (with one
    /// partition, where the node now takes gateways itself; with several, where the routers
    /// reach it).
    fn serving(&mut self) -> SocketAddr {
        logged_addr(&self.proc.wait_for("listening transport=\"tcp\"", WAIT))
    }

    fn admin(&mut self) -> Http {
        let addr = logged_addr(&self.proc.wait_for("listening transport=\"http\"", WAIT));
        let token = std::fs::read_to_string(&self.token_file).unwrap();
        Http {
            addr,
            token: Some(token.trim().to_owned()),
        }
    }
}

fn device(n: u64) -> String {
    format!("{}", 15_551_000_000 + n)
}

fn ask(octets: u64) -> MsccSpec {
    MsccSpec::ask(1, octets)
}

fn report(used: u64, more: bool) -> MsccSpec {
    MsccSpec::report(1, used, more)
}

/// The used and reserved octets of a node of the tree.
fn usage(api: &Http, path: &str) -> (u64, u64) {
    let (status, v) = api.call("GET", &format!("/v1/usage/{path}"), None);
    assert_eq!(status, 200, "{v}");
    let l = &v["node"]["limits"][0];
    (l["used"].as_u64().unwrap(), l["reserved"].as_u64().unwrap())
}

/// Asks until the node answers (the first CCRs after a takeover may find it still opening).
fn first_answer(addr: SocketAddr, spec: &CcrSpec, deadline: Instant) -> (Gw, CcaResult) {
    loop {
        if let Ok(s) = std::net::TcpStream::connect(addr) {
            drop(s);
            let mut gw = Gw::open_at(addr, "pgw.localdomain");
            let r = gw.ask(spec);
            return (gw, r);
        }
        assert!(Instant::now() < deadline, "{addr} never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL of the owner with sessions open, in `replicated` durability: a standby takes the
/// partition over from an empty disk within a bounded time, every acknowledged report is in
/// its ledger, the dead owner's reservations stay counted, and the sessions carry on there,
/// a retransmission answered from the stored answer and charged once.
#[test]
fn a_standby_takes_over_a_killed_owner_and_its_sessions_carry_on() {
    let nats = nats::Nats::cluster(3);
    let replicated = "[journal]\ndurability = \"replicated\"\n[charging]\nvalidity_time_s = 600\n";
    // (The default timers: a lease of 3 s, granting stopped 0.5 s before its end.)
    let mut a = Node::start("node-a", &nats, replicated);
    let a_addr = a.serving();
    let mut b = Node::start("node-b", &nats, replicated);
    let mut c = Node::start("node-c", &nats, replicated);
    // Both stand by: neither serves while node-a holds the lease.
    assert!(
        !b.proc
            .saw_within("listening transport=\"tcp\"", Duration::from_secs(2))
    );
    assert!(
        !c.proc
            .saw_within("listening transport=\"tcp\"", Duration::ZERO)
    );

    // Ten sessions on node-a (iot devices: 10 MiB a month each), each reporting 3 MiB and
    // holding a fresh reservation.
    let mut gw = Gw::open_at(a_addr, "pgw.localdomain");
    let mut last_update = Vec::new();
    for i in 0..10u64 {
        let sid = format!("pgw;{i}");
        let r = gw.ask(
            &CcrSpec::new(&sid, INITIAL, 0)
                .msisdn(&device(8100 + i))
                .mscc(ask(MIB)),
        );
        assert_eq!(r.result_code, 2001, "{r:?}");
        let u = CcrSpec::new(&sid, UPDATE, 1).mscc(report(3 * MIB, true));
        let r = gw.ask(&u);
        assert_eq!(r.result_code, 2001, "{r:?}");
        last_update.push((u, r));
    }
    let api_a = a.admin();
    let (used, reserved) = usage(&api_a, "acme/iot");
    assert_eq!(used, 30 * MIB);
    assert!(reserved > 0);
    // A manager's named token, made on the owner: the cluster's, not the node's.
    let (status, v) = api_a.call(
        "POST",
        "/v1/tokens",
        Some(r#"{"name":"acme-ops","role":"manager","scope":"acme"}"#),
    );
    assert_eq!(status, 201, "{v}");
    let manager = |addr| Http {
        addr,
        token: v["token"].as_str().map(str::to_owned),
    };
    assert_eq!(
        manager(api_a.addr)
            .call("GET", "/v1/usage/acme/iot", None)
            .0,
        200
    );

    // SIGKILL: no stop, no flush, the lease left to run out.
    a.proc.signal("KILL");
    let killed = Instant::now();
    a.proc.wait_exit(WAIT);
    // Whichever standby wins the lease serves; the other stays a standby.
    let (mut new, mut other) = loop {
        if b.proc
            .saw_within("took the partition over", Duration::from_millis(50))
        {
            break (b, c);
        }
        if c.proc
            .saw_within("took the partition over", Duration::from_millis(50))
        {
            break (c, b);
        }
        assert!(killed.elapsed() < WAIT, "no standby took over");
    };
    let addr = new.serving();
    // The sessions carry on: the retransmitted last UPDATE gets its stored answer.
    let (u0, r0) = &last_update[0];
    let (mut gw, again) = first_answer(addr, u0, killed + WAIT);
    let failover = killed.elapsed();
    eprintln!(
        "failover: {} served {:?} after the owner's SIGKILL",
        new.name, failover
    );
    assert_eq!(again.result_code, r0.result_code, "{again:?}");
    assert_eq!(
        again.mscc[0].granted_octets, r0.mscc[0].granted_octets,
        "the stored answer: {again:?} vs {r0:?}"
    );
    let api = new.admin();
    let (used, reserved_after) = usage(&api, "acme/iot");
    assert_eq!(used, 30 * MIB, "every acknowledged report, once");
    // The manager's token works on the new owner, its name is taken there, and revoked
    // there it is gone.
    assert_eq!(
        manager(api.addr).call("GET", "/v1/usage/acme/iot", None).0,
        200
    );
    let (status, _) = api.call(
        "POST",
        "/v1/tokens",
        Some(r#"{"name":"acme-ops","role":"viewer","scope":"acme"}"#),
    );
    assert_eq!(status, 409);
    assert_eq!(api.call("DELETE", "/v1/tokens/acme-ops", None).0, 204);
    assert_eq!(
        manager(api.addr).call("GET", "/v1/usage/acme/iot", None).0,
        401
    );
    assert_eq!(
        reserved_after, reserved,
        "the dead owner's reservations stay counted until they expire"
    );
    for i in 0..10u64 {
        let sid = format!("pgw;{i}");
        // As a gateway does within a session: addressed to the host that answered so far (the
        // dead owner). Any node of the cluster answers for it.
        let r = gw.ask(
            &CcrSpec::new(&sid, UPDATE, 2)
                .destination_host("node-a.localdomain")
                .mscc(report(MIB, true)),
        );
        assert_eq!(r.result_code, 2001, "session {sid} on the new owner: {r:?}");
        let r = gw.ask(&CcrSpec::new(&sid, TERMINATION, 3).mscc(report(0, false)));
        assert_eq!(r.result_code, 2001, "{r:?}");
    }
    let (used, reserved) = usage(&api, "acme/iot");
    assert_eq!(used, 40 * MIB);
    assert_eq!(reserved, 0, "every session ended: nothing held");
    // Its metrics say it holds the lease and the log is up to date.
    let metrics = || metrics_of(&api);
    let deadline = Instant::now() + WAIT;
    loop {
        let m = metrics();
        if m.contains("ocfd_cluster_lease_granting{partition=\"0\"} 1")
            && m.contains("ocfd_cluster_replication_lag_records{partition=\"0\"} 0")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{m}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The other node still stands by.
    assert!(
        !other
            .proc
            .saw_within("took the partition over", Duration::ZERO)
    );
    new.proc.signal("TERM");
    assert!(new.proc.wait_exit(WAIT).success(), "{}", new.proc.output());
}

/// A clean stop hands the partition over at once: the lease is given up after the log has
/// the stop's records, so a standby serves well before the lease would have run out, with
/// every report (in `async` durability too). The provisioning is larger than a NATS message
/// (3 MiB of tenant file): its import reaches the standby in pieces.
#[test]
fn a_clean_stop_hands_the_partition_over_with_nothing_lost() {
    let nats = nats::Nats::cluster(3);
    let files = tempfile::tempdir().unwrap();
    let big = files.path().join("big.toml");
    let mut text = String::new();
    for i in 0..60_000 {
        text.push_str(&format!(
            "# {i:08} padding that makes this file larger than one NATS message\n"
        ));
    }
    text.push_str(include_str!("common/roamers.toml"));
    assert!(text.len() > 3 << 20);
    std::fs::write(&big, text).unwrap();
    let extra = format!("[charging]\ntenant_files = [\"{}\"]\n", big.display());
    let mut a = Node::start("node-a", &nats, &extra);
    let a_addr = a.serving();
    let mut b = Node::start("node-b", &nats, &extra);
    let mut gw = Gw::open_at(a_addr, "pgw.localdomain");
    for i in 0..20u64 {
        let sid = format!("s;{i}");
        gw.ask(
            &CcrSpec::new(&sid, INITIAL, 0)
                .msisdn(&device(8200 + i))
                .mscc(ask(MIB)),
        );
        let r = gw.ask(&CcrSpec::new(&sid, TERMINATION, 1).mscc(report(2 * MIB, false)));
        assert_eq!(r.result_code, 2001, "{r:?}");
    }
    // And a device of the large file's tenant.
    let r = gw.ask(
        &CcrSpec::new("t;1", INITIAL, 0)
            .msisdn("15558000001")
            .mscc(ask(MIB)),
    );
    assert_eq!(r.result_code, 2001, "{r:?}");
    let r = gw.ask(&CcrSpec::new("t;1", TERMINATION, 1).mscc(report(MIB, false)));
    assert_eq!(r.result_code, 2001, "{r:?}");
    drop(gw);
    let status = {
        a.proc.signal("TERM");
        a.proc.wait_exit(WAIT)
    };
    assert!(status.success(), "{}", a.proc.output());
    let stopped = Instant::now();
    b.proc.wait_for("took the partition over", WAIT);
    let addr = b.serving();
    eprintln!("hand-over after a clean stop: {:?}", stopped.elapsed());
    // The start was no first start: the copy held the import, so nothing was imported again.
    assert!(
        !b.proc.output().contains("first start"),
        "{}",
        b.proc.output()
    );
    let api = b.admin();
    assert_eq!(usage(&api, "acme/iot"), (40 * MIB, 0));
    assert_eq!(usage(&api, "travel").0, MIB);
    let mut gw = Gw::open_at(addr, "pgw.localdomain");
    let r = gw.ask(
        &CcrSpec::new("after", INITIAL, 0)
            .msisdn(&device(8300))
            .mscc(ask(MIB)),
    );
    assert_eq!(r.result_code, 2001, "{r:?}");
}

/// A TCP proxy to one NATS server that the test can cut: every connection through it is shut
/// down and new ones are closed at once, as if the network between a node and NATS failed,
/// while the node's gateways still reach it.
struct Proxy {
    url: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn to(upstream: &str) -> Proxy {
        use std::sync::atomic::Ordering;
        let target: SocketAddr = upstream.trim_start_matches("nats://").parse().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("nats://{}", listener.local_addr().unwrap());
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (cut2, open2) = (cut.clone(), open.clone());
        // Ends with the test process (its threads block in accept and read).
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if cut2.load(Ordering::Acquire) {
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                let mut o = open2.lock().unwrap();
                for s in [&client, &server] {
                    o.push(s.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { url, cut, open }
    }

    /// Cuts every connection through it, and refuses new ones until [`Proxy::heal`].
    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Release);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// What a gateway saw: a grant or a report, by which node, at which moment of the run.
#[derive(Debug)]
enum Seen {
    Granted { node: &'static str, octets: u64 },
    Reported { node: &'static str, octets: u64 },
}

/// One device's pool drawn by sessions, with the history of what the gateways saw.
struct Pool {
    /// Session-Ids are this and a number.
    name: &'static str,
    msisdn: String,
    /// Octets each session asks for.
    ask: u64,
    sessions: u32,
    history: Vec<Seen>,
}

impl Pool {
    fn new(name: &'static str, msisdn: String, ask: u64) -> Pool {
        Pool {
            name,
            msisdn,
            ask,
            sessions: 0,
            history: Vec::new(),
        }
    }

    /// One session on `gw`, served by `node`: CCR-I, then CCR-T reporting all it was granted,
    /// each noted. The grant's result (the MSCC's when the request succeeded without units).
    fn session(&mut self, gw: &mut Gw, node: &'static str) -> u32 {
        self.sessions += 1;
        let sid = format!("{};{}", self.name, self.sessions);
        let r = gw.ask(
            &CcrSpec::new(&sid, INITIAL, 0)
                .msisdn(&self.msisdn)
                .mscc(ask(self.ask)),
        );
        let granted = r.mscc.first().and_then(|m| m.granted_octets).unwrap_or(0);
        if r.result_code != 2001 || granted == 0 {
            return if r.result_code == 2001 {
                r.mscc[0].result_code.unwrap_or(0)
            } else {
                r.result_code
            };
        }
        self.history.push(Seen::Granted {
            node,
            octets: granted,
        });
        let t = gw.ask(&CcrSpec::new(&sid, TERMINATION, 1).mscc(report(granted, false)));
        if t.result_code == 2001 {
            self.history.push(Seen::Reported {
                node,
                octets: granted,
            });
        }
        2001
    }
}

/// The history checker (in the spirit of Jepsen's): replays every grant and acknowledged
/// report of the run in the order the gateways saw them and checks that the pool never had
/// more granted than its limit allows: used + held ≤ limit at every step, where a grant is
/// held until its session reports it. Returns the octets granted by each node.
fn check_history(history: &[Seen], limit: u64) -> std::collections::BTreeMap<&'static str, u64> {
    let (mut held, mut used) = (0u64, 0u64);
    let mut granted = std::collections::BTreeMap::new();
    for (i, s) in history.iter().enumerate() {
        match s {
            Seen::Granted { octets, node } => {
                held += octets;
                *granted.entry(*node).or_insert(0) += octets;
            }
            Seen::Reported { octets, node } => {
                assert!(
                    granted.contains_key(node),
                    "{node} settled what it never granted"
                );
                held = held.saturating_sub(*octets);
                used += octets;
            }
        }
        assert!(
            used + held <= limit,
            "step {i} ({s:?}): used {used} + held {held} > limit {limit}: a unit was granted twice\n{history:#?}"
        );
    }
    granted
}

/// An owner cut off from NATS while its gateway still reaches it (`replicated` durability):
/// it grants nothing it could not replicate and stops charging before its lease can be taken;
/// the standby takes over; no unit of the device's pool is granted twice (history checker);
/// every acknowledged report is in the new owner's ledger; healed, the old owner finds itself
/// deposed and exits 75 for systemd to restart it as a standby.
#[test]
fn an_owner_cut_off_from_nats_grants_nothing_twice() {
    let nats = nats::Nats::cluster(3);
    let proxies: Vec<Proxy> = nats.servers.iter().map(|s| Proxy::to(&s.url())).collect();
    let urls: Vec<String> = proxies.iter().map(|p| p.url.clone()).collect();
    let replicated = "[journal]\ndurability = \"replicated\"\n";
    let mut a = Node::start_via("node-a", &urls, replicated);
    let a_addr = a.serving();
    let mut b = Node::start("node-b", &nats, replicated);
    // One pool: iot device 8400, 10 MiB a month; every session asks 256 KiB and uses it all.
    const LIMIT: u64 = 10 * MIB;
    const ASK: u64 = 256 * 1024;
    let mut pool = Pool::new("pool", device(8400), ASK);
    let mut gw_a = Gw::open_at(a_addr, "pgw-a.localdomain");
    for _ in 0..8 {
        assert_eq!(pool.session(&mut gw_a, "node-a"), 2001);
    }
    // The cut: node-a's gateway still reaches it, NATS does not.
    for p in &proxies {
        p.cut();
    }
    let cut = Instant::now();
    let mut refused_by_a = Vec::new();
    while !b
        .proc
        .saw_within("took the partition over", Duration::from_millis(10))
    {
        let code = pool.session(&mut gw_a, "node-a");
        assert_ne!(code, 2001, "node-a granted after it was cut off from NATS");
        refused_by_a.push(code);
        assert!(cut.elapsed() < WAIT, "no takeover");
    }
    eprintln!(
        "node-a answered {refused_by_a:?} while cut off; node-b took over after {:?}",
        cut.elapsed()
    );
    let mut gw_b = Gw::open_at(b.serving(), "pgw-b.localdomain");
    // Both gateways go on until the pool is empty; node-a grants nothing.
    let mut exhausted = false;
    for _ in 0..200 {
        let code = pool.session(&mut gw_b, "node-b");
        assert_ne!(
            pool.session(&mut gw_a, "node-a"),
            2001,
            "node-a granted after the takeover"
        );
        if code == 4012 {
            exhausted = true;
            break;
        }
        assert_eq!(code, 2001);
    }
    assert!(exhausted, "the pool never ran out");
    let granted = check_history(&pool.history, LIMIT);
    eprintln!("granted by node: {granted:?}");
    assert_eq!(
        granted["node-a"],
        8 * ASK,
        "node-a granted only before the cut"
    );
    let total: u64 = granted.values().sum();
    assert!(total > LIMIT - ASK, "the pool was used up: {total}");
    // Every acknowledged report is in the new owner's ledger.
    let reported: u64 = pool
        .history
        .iter()
        .map(|s| match s {
            Seen::Reported { octets, .. } => *octets,
            Seen::Granted { .. } => 0,
        })
        .sum();
    let api = b.admin();
    let (used, _) = usage(&api, &format!("acme/iot/{}", pool.msisdn));
    assert_eq!(
        used, reported,
        "acknowledged reports in the new owner's ledger"
    );
    // Healed: node-a learns it was deposed and exits 75.
    for p in &proxies {
        p.heal();
    }
    let status = a.proc.wait_exit(WAIT);
    assert_eq!(status.code(), Some(75), "{}", a.proc.output());
}

/// A NATS server killed (SIGKILL) and restarted, twice, under load on the owner
/// (`replicated` durability): answers may slow down while the servers elect a new leader,
/// but every report the owner acknowledged is in the log: after the owner is killed too, the
/// standby's ledger holds them all.
#[test]
fn a_nats_server_killed_and_restarted_under_load_loses_nothing() {
    let mut nats = nats::Nats::cluster(3);
    // A lease long enough to ride out an election; answers may wait for the log as long.
    let extra = "lease_ttl_ms = 10000\ngrant_margin_ms = 1000\n[journal]\ndurability = \"replicated\"\ndurable_timeout_ms = 15000\n";
    let mut a = Node::start("node-a", &nats, extra);
    let a_addr = a.serving();
    let mut b = Node::start("node-b", &nats, extra);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (stop_too, done_too) = (stop.clone(), done.clone());
    // The load: engineering devices (50 GiB a month: never refused for their limit), one
    // session after another, each reporting 100 KiB at its end.
    let load = std::thread::spawn(move || {
        let mut gw = Gw::open_at(a_addr, "pgw.localdomain");
        let (mut acknowledged, mut sent, mut sessions) = (0u64, 0u64, 0u64);
        for i in 0..100_000u64 {
            if stop_too.load(std::sync::atomic::Ordering::Acquire) {
                break;
            }
            let sid = format!("load;{i}");
            let r = gw.ask(
                &CcrSpec::new(&sid, INITIAL, 0)
                    .msisdn(&device(i % 5000))
                    .mscc(ask(MIB)),
            );
            if r.result_code != 2001 {
                continue;
            }
            sent += 100 * 1024;
            let t = gw.ask(&CcrSpec::new(&sid, TERMINATION, 1).mscc(report(100 * 1024, false)));
            if t.result_code == 2001 {
                acknowledged += 100 * 1024;
            }
            sessions += 1;
            done_too.store(sessions, std::sync::atomic::Ordering::Release);
        }
        (acknowledged, sent, sessions)
    });
    // Faults between stretches of load: each waits (bounded) for 100 more sessions.
    let more_sessions = || {
        let from = done.load(std::sync::atomic::Ordering::Acquire);
        let deadline = Instant::now() + WAIT;
        while done.load(std::sync::atomic::Ordering::Acquire) < from + 100 {
            assert!(
                Instant::now() < deadline,
                "the load stalled at {from} sessions"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    for victim in [1usize, 2] {
        more_sessions();
        nats.servers[victim].kill();
        more_sessions();
        nats.servers[victim].restart();
    }
    more_sessions();
    stop.store(true, std::sync::atomic::Ordering::Release);
    let (acknowledged, sent, sessions) = load.join().unwrap();
    eprintln!("{sessions} sessions; {acknowledged} octets acknowledged of {sent} reported");
    assert!(sessions >= 500, "the load ran: {sessions} sessions");
    a.proc.signal("KILL");
    a.proc.wait_exit(WAIT);
    b.proc.wait_for("took the partition over", WAIT);
    b.serving();
    let api = b.admin();
    let (used, _) = usage(&api, "acme/engineering");
    assert!(
        used >= acknowledged && used <= sent,
        "acknowledged {acknowledged} <= used {used} <= reported {sent}"
    );
}

/// A gateway may connect to any node: a standby relays its requests to the owner (the
/// owner's address read from the lease), Route-Record added, and returns the answers; a
/// request that already passed the standby is answered 3005; with the owner dead, 3002 from
/// the standby itself; once the standby has taken over, the gateway is served there.
#[test]
fn a_gateway_on_a_standby_is_relayed_to_the_owner() {
    let nats = nats::Nats::cluster(3);
    let replicated = "[journal]\ndurability = \"replicated\"\n";
    let mut a = Node::start("node-a", &nats, replicated);
    a.serving();
    let mut b = Node::start("node-b", &nats, replicated);
    let relay = b.gateways;
    let mut gw = Gw::open_at(relay, "pgw.localdomain");
    // The standby learns the owner's address at its next look at the lease: 3002 until then.
    let deadline = Instant::now() + WAIT;
    let mut n = 0;
    let sid = loop {
        n += 1;
        let sid = format!("relayed;{n}");
        let r = gw.ask(
            &CcrSpec::new(&sid, INITIAL, 0)
                .msisdn(&device(8500))
                .mscc(ask(MIB)),
        );
        if r.result_code == 2001 {
            break sid;
        }
        assert_eq!(r.result_code, 3002, "{r:?}");
        assert!(
            Instant::now() < deadline,
            "the relay never reached the owner"
        );
    };
    let r = gw.ask(&CcrSpec::new(&sid, UPDATE, 1).mscc(report(3 * MIB, true)));
    assert_eq!(r.result_code, 2001, "{r:?}");
    // The rest of the device's 10 MiB, as the owner sized it.
    assert_eq!(r.mscc[0].granted_octets, Some(7 * MIB), "{r:?}");
    let api_a = a.admin();
    assert_eq!(
        usage(&api_a, &format!("acme/iot/{}", device(8500))).0,
        3 * MIB
    );
    assert!(
        a.proc.output().contains("node-b.localdomain"),
        "the owner saw the relay's CER"
    );
    // A manager blocks another device: the owner's ASR for its session comes down through the
    // relay, and the gateway's answer goes back up (the session is aborted, not left to
    // expire).
    let r = gw.ask(
        &CcrSpec::new("relayed;asr", INITIAL, 0)
            .msisdn(&device(8502))
            .mscc(ask(MIB)),
    );
    assert_eq!(r.result_code, 2001, "{r:?}");
    let (status, v) = api_a.call(
        "PUT",
        &format!("/v1/blocked/acme/iot/{}", device(8502)),
        None,
    );
    assert_eq!(status, 200, "{v}");
    let asr = gw.conn.expect_frame();
    assert!(
        asr.header.is_request() && asr.header.command_code == 274,
        "{asr:?}"
    );
    assert_eq!(
        asr.session_id().and_then(|s| s.utf8().ok()),
        Some("relayed;asr")
    );
    gw.conn.send(&answer_of(&asr, "pgw.localdomain", 2001));
    let aborted = events_of(&api_a, "kind=session_aborted", 1);
    assert_eq!(aborted[0]["session_id"], "relayed;asr", "{aborted:?}");
    // Bad bytes at the relay get what ocfd answers them anywhere: a version 2 header, 5011
    // and the connection closed; the relay goes on serving others.
    let mut bad = Conn::connect(relay);
    bad.send(&[
        2, 0, 0, 20, 0x80, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78,
    ]);
    let m = bad.expect_frame();
    assert_eq!(result_code(&m), 5011);
    assert_eq!(m.header.hop_by_hop, 0x1234);
    bad.expect_closed();
    // A request whose Route-Record names the standby has been there: a loop.
    let mut looped = bytes::BytesMut::new();
    CcrSpec::new("looped;1", INITIAL, 0)
        .msisdn(&device(8501))
        .mscc(ask(MIB))
        .write(&mut looped, 77, 77);
    ocf_protocol::avp::Avp::new(282, 0x40, 0, b"node-b.localdomain").encode(&mut looped);
    let len = (looped.len() as u32).to_be_bytes();
    looped[1..4].copy_from_slice(&len[1..4]);
    gw.conn.send(&looped);
    let answer = gw.conn.expect_frame();
    assert_eq!(answer.header.hop_by_hop, 77);
    assert_eq!(result_code(&answer), 3005);
    // The owner killed: the standby answers 3002 itself until it serves.
    a.proc.signal("KILL");
    a.proc.wait_exit(WAIT);
    let r = gw.ask(&CcrSpec::new(&sid, UPDATE, 2).mscc(report(MIB, true)));
    assert_eq!(r.result_code, 3002, "{r:?}");
    b.proc.wait_for("took the partition over", WAIT);
    let addr = b.serving();
    assert!(
        b.proc.output().contains("router stopped"),
        "{}",
        b.proc.output()
    );
    // The gateway connects again, to the new owner: its session goes on (the 3002 charged
    // nothing; the same request number is asked again).
    let mut gw = Gw::open_at(addr, "pgw.localdomain");
    let r = gw.ask(&CcrSpec::new(&sid, UPDATE, 2).mscc(report(MIB, true)));
    assert_eq!(r.result_code, 2001, "{r:?}");
    let r = gw.ask(&CcrSpec::new(&sid, TERMINATION, 3).mscc(report(0, false)));
    assert_eq!(r.result_code, 2001, "{r:?}");
    let api = b.admin();
    assert_eq!(
        usage(&api, &format!("acme/iot/{}", device(8500))),
        (4 * MIB, 0)
    );
}

/// The load tool drives gateways at all three nodes at once, the owner directly and the two
/// standbys through their relays: every request is answered 2001, and the owner's ledger holds
/// the sessions of all three.
#[test]
fn the_load_tool_at_all_three_nodes_is_served() {
    let nats = nats::Nats::cluster(3);
    let mut a = Node::start("node-a", &nats, "");
    let owner = a.serving();
    let b = Node::start("node-b", &nats, "");
    let c = Node::start("node-c", &nats, "");
    let relays = [b.gateways, c.gateways];
    // The standbys know the owner once they have read its lease: a CCR through each says so.
    for (i, r) in relays.iter().enumerate() {
        let deadline = Instant::now() + WAIT;
        let mut gw = Gw::open_at(*r, "probe.localdomain");
        let mut n = 0;
        loop {
            n += 1;
            let spec = CcrSpec::new(format!("probe{i};{n}"), INITIAL, 0)
                .msisdn(&device(9000 + i as u64))
                .mscc(ask(MIB));
            if gw.ask(&spec).result_code == 2001 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "relay {r} never reached the owner"
            );
        }
    }
    let targets = [
        ("owner", owner),
        ("relay-b", relays[0]),
        ("relay-c", relays[1]),
    ];
    let runs: Vec<(&str, Watched)> = targets
        .iter()
        .enumerate()
        .map(|(i, (name, addr))| {
            let mut cmd = Command::new(loadtest());
            cmd.args(["run", "--server", &addr.to_string()])
                .args(["--origin-host", &format!("lt{i}.localdomain")])
                .args([
                    "--subscribers",
                    &format!("{}:1000", 15_551_000_000u64 + 1000 * i as u64),
                ])
                .args([
                    "--sessions",
                    "8",
                    "--connections",
                    "1",
                    "--requests",
                    "3000",
                ])
                .args([
                    "--duration-s",
                    "60",
                    "--json",
                    "--quiet",
                    "--max-error-rate",
                    "0",
                ]);
            (*name, Watched::spawn(name, cmd))
        })
        .collect();
    for (name, mut p) in runs {
        let status = p.wait_exit(WAIT * 2);
        let out = p.output();
        assert!(status.success(), "{name}: {out}");
        // The report: pretty JSON, from its first line on.
        let json = out.find("\n{").map_or(out.as_str(), |i| &out[i + 1..]);
        let report: serde_json::Value = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("{name}: no JSON report ({e}):\n{out}"));
        assert_eq!(report["median"]["error_rate"], 0.0, "{name}: {report}");
        eprintln!("{name}: {} answers/s", report["median"]["answers_per_s"]);
    }
    // Sessions from all three gateways reached the one ledger.
    let api = a.admin();
    let (used, _) = usage(&api, "acme/engineering");
    assert!(used > 0, "the owner's ledger has the load's usage");
    assert!(
        a.proc.output().contains("node-b.localdomain")
            && a.proc.output().contains("node-c.localdomain"),
        "both relays connected to the owner:\n{}",
        a.proc.output()
    );
    // The cluster as the owner shows it: itself the owner, both standbys caught up with the
    // log (they write their entry at each look at the lease).
    let view = cluster_view(&api, 3);
    assert_eq!(view["owner"]["node"], "node-a", "{view:#}");
    // The lease names the owner's engine, which routers reach; the table, its router.
    let engine = logged_addr(&a.proc.wait_for("listening transport=\"tcp\"", WAIT));
    assert_eq!(view["owner"]["diameter"], engine.to_string(), "{view:#}");
    assert_eq!(view["nodes"][0]["diameter"], owner.to_string(), "{view:#}");
    assert_eq!(
        roles(&view),
        ["node-a owner", "node-b standby", "node-c standby"]
    );
    assert!(view["log_end"].as_u64().unwrap() > 0);
    // And as ocfctl prints it.
    let text = ocfctl(&a, &api, &["cluster"]);
    assert!(text.contains("owner node-a"), "{text}");
    for n in ["node-b", "node-c"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(n) && l.contains("standby")),
            "{text}"
        );
    }
}

/// `GET /v1/cluster` once `nodes` nodes are in the table and every one has the log's end.
fn cluster_view(api: &Http, nodes: usize) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, v) = api.call("GET", "/v1/cluster", None);
        // 503: NATS did not answer within the look's bound (a loaded machine); asked again.
        if status == 503 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["enabled"], true, "{v}");
        let caught_up = v["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == nodes && n.iter().all(|n| n["lag_entries"] == 0));
        if caught_up {
            return v;
        }
        assert!(Instant::now() < deadline, "{v:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Each node's name and role, as `/v1/cluster` lists them ("node-a owner").
fn roles(view: &serde_json::Value) -> Vec<String> {
    view["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            format!(
                "{} {}",
                n["node"].as_str().unwrap_or(""),
                n["role"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// Runs ocfctl against `node`'s admin API with its token; its standard output.
fn ocfctl(node: &Node, api: &Http, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ocfctl"))
        .args(["--url", &format!("http://{}", api.addr)])
        .arg("--token-file")
        .arg(&node.token_file)
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ocfctl {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A drain hands the partition to the node named, with nothing lost and nothing granted twice:
/// the owner stops, its log takes the stop's records, the lease goes to that node at once (the
/// other standby must wait), and the old owner exits 75 to start again as a standby. A drain
/// to a node that is not a standby is refused.
#[test]
fn a_drain_hands_the_partition_to_the_node_named() {
    let nats = nats::Nats::cluster(3);
    let replicated = "[journal]\ndurability = \"replicated\"\n";
    let mut a = Node::start("node-a", &nats, replicated);
    let a_addr = a.serving();
    let b = Node::start("node-b", &nats, replicated);
    let mut c = Node::start("node-c", &nats, replicated);
    let api_a = a.admin();
    cluster_view(&api_a, 3);
    const LIMIT: u64 = 10 * MIB;
    const ASK: u64 = 512 * 1024;
    let mut pool = Pool::new("drain", device(8600), ASK);
    let mut gw = Gw::open_at(a_addr, "pgw.localdomain");
    for _ in 0..6 {
        assert_eq!(pool.session(&mut gw, "node-a"), 2001);
    }
    drop(gw);
    // Refused: the owner itself, a node that is not there.
    for (to, status) in [("node-a", 400), ("node-x", 409)] {
        let body = format!("{{\"to\": \"{to}\"}}");
        let (s, v) = api_a.call("POST", "/v1/cluster/drain", Some(&body));
        assert_eq!(s, status, "{to}: {v}");
    }
    let said = ocfctl(&a, &api_a, &["cluster", "drain", "--to", "node-c"]);
    assert!(said.contains("node-c"), "{said}");
    let drained = Instant::now();
    assert_eq!(
        a.proc.wait_exit(WAIT).code(),
        Some(75),
        "{}",
        a.proc.output()
    );
    c.proc.wait_for("took the partition over", WAIT);
    let addr = c.serving();
    eprintln!(
        "drain: node-c serves {:?} after the request",
        drained.elapsed()
    );
    let mut gw = Gw::open_at(addr, "pgw.localdomain");
    let mut exhausted = false;
    for _ in 0..100 {
        match pool.session(&mut gw, "node-c") {
            2001 => {}
            4012 => {
                exhausted = true;
                break;
            }
            other => panic!("node-c answered {other}"),
        }
    }
    assert!(exhausted, "the pool never ran out");
    let granted = check_history(&pool.history, LIMIT);
    assert_eq!(granted["node-a"], 6 * ASK);
    assert_eq!(
        granted.values().sum::<u64>(),
        LIMIT,
        "every unit granted once: {granted:?}"
    );
    let api_c = c.admin();
    assert_eq!(
        usage(&api_c, &format!("acme/iot/{}", pool.msisdn)),
        (LIMIT, 0)
    );
    // node-b waited: the lease was node-c's to take.
    assert!(!b.proc.output().contains("took the partition over"));
    // The old owner took itself out of the node table as it stopped.
    let view = cluster_view(&api_c, 2);
    assert_eq!(view["owner"]["node"], "node-c", "{view:#}");
    assert_eq!(roles(&view), ["node-b standby", "node-c owner"]);
}

/// A node's `/metrics` page.
fn metrics_of(api: &Http) -> String {
    ocf::ctl::http::Client {
        addr: api.addr,
        token: None,
        timeout: WAIT,
    }
    .call("GET", "/metrics", None)
    .unwrap()
    .body
}

/// A tenant file with globex (partition 0 of 2; the embedded acme and alice are in 1), its
/// device hank on 4470000001.
fn globex_file(dir: &std::path::Path) -> std::path::PathBuf {
    let globex = dir.join("globex.toml");
    std::fs::write(
        &globex,
        "[[tenant]]\nname = \"globex\"\nnode = [\n  { path = \"globex\", limits = [{ unit = \"octets\", amount = \"1 GiB\" }] },\n  { path = \"globex/hank\", msisdn = \"4470000001\", limits = [{ unit = \"octets\", amount = \"100 MiB\" }] },\n]\n",
    )
    .unwrap();
    globex
}

/// An owner stopped (SIGTERM) while its router has a gateway with sessions in both partitions:
/// its router sends the gateway DPR first, the stop's records reach the stream, the lease is
/// given up and the standby takes the partition over; the gateway goes on at the other owner's
/// router, both sessions carrying on with every report counted once.
#[test]
fn a_stopping_owner_sends_its_gateways_away_and_hands_its_partition_over() {
    let nats = nats::Nats::cluster(3);
    let dir = tempfile::tempdir().unwrap();
    let (mut stopping, other, mut c, _) = two_partitions(&nats, dir.path(), "");
    // A gateway on the owner of acme's partition, a session in each partition.
    let mut gw = Gw::open_at(stopping.gateways, "pgw.localdomain");
    let acme_dev = device(8700);
    let hank = "4470000001";
    let mut opened = Vec::new();
    for (sid, msisdn) in [("stop;acme", acme_dev.as_str()), ("stop;globex", hank)] {
        let deadline = Instant::now() + WAIT;
        loop {
            let r = gw.ask(&CcrSpec::new(sid, INITIAL, 0).msisdn(msisdn).mscc(ask(MIB)));
            if r.result_code == 2001 {
                break;
            }
            assert_eq!(r.result_code, 3002, "{r:?}");
            assert!(
                Instant::now() < deadline,
                "{msisdn} never reached its owner"
            );
        }
        let r = gw.ask(&CcrSpec::new(sid, UPDATE, 1).mscc(report(MIB, true)));
        assert_eq!(r.result_code, 2001, "{r:?}");
        opened.push((sid, msisdn));
    }
    stopping.proc.signal("TERM");
    // The router's DPR comes first; answered, the connection ends.
    let dpr = gw.conn.expect_frame();
    assert!(
        dpr.header.is_request() && dpr.header.command_code == 282,
        "{dpr:?}"
    );
    gw.conn.send(&answer_of(&dpr, "pgw.localdomain", 2001));
    gw.conn.expect_closed();
    assert!(stopping.proc.wait_exit(WAIT).success(), "a clean stop");
    assert_eq!(partition_taken(&mut c), 1);
    c.serving();
    // The gateway goes on at the other owner's router: each session's next report, with its
    // Subscription-Id (that router never saw the sessions), is charged where its partition is.
    let mut gw = Gw::open_at(other.gateways, "pgw.localdomain");
    for (sid, msisdn) in &opened {
        let deadline = Instant::now() + WAIT;
        loop {
            let r = gw.ask(
                &CcrSpec::new(*sid, UPDATE, 2)
                    .msisdn(msisdn)
                    .mscc(report(MIB, true)),
            );
            if r.result_code == 2001 {
                break;
            }
            assert_eq!(r.result_code, 3002, "{sid}: {r:?}");
            assert!(Instant::now() < deadline, "{sid} never went on");
        }
        let r = gw.ask(&CcrSpec::new(*sid, TERMINATION, 3).mscc(report(0, false)));
        assert_eq!(r.result_code, 2001, "{sid}: {r:?}");
    }
    let api = c.admin();
    assert_eq!(usage(&api, &format!("acme/iot/{acme_dev}")), (2 * MIB, 0));
    // Asked through the new owner, globex's usage comes from its own owner.
    assert_eq!(usage(&api, "globex/hank"), (2 * MIB, 0));
}

/// Three nodes over two partitions (acme's 1 and globex's 0, `globex_file`), one operator's
/// token shared by all (a manager's request goes on with it), `extra` after the [cluster]
/// table: acme's owner, globex's owner, the standby, and the token's file.
fn two_partitions(
    nats: &nats::Nats,
    dir: &std::path::Path,
    extra: &str,
) -> (Node, Node, Node, std::path::PathBuf) {
    // One partition each: the first node would otherwise take both.
    let extra = format!(
        "partitions = 2\nmax_partitions = 1\n{extra}[charging]\ntenant_files = [\"{}\"]\n",
        globex_file(dir).display()
    );
    let token = dir.join("admin-token");
    std::fs::write(&token, "a-token-every-node-of-this-cluster-shares\n").unwrap();
    let urls: Vec<String> = nats.servers.iter().map(|s| s.url()).collect();
    let start = |name: &str| Node::start_in(name, &urls, Some(&token), &extra, None);
    let mut a = start("node-a");
    let pa = partition_taken(&mut a);
    a.serving();
    let mut b = start("node-b");
    let pb = partition_taken(&mut b);
    b.serving();
    assert_ne!(pa, pb, "one partition per node");
    let c = start("node-c");
    if pa == 1 {
        (a, b, c, token)
    } else {
        (b, a, c, token)
    }
}

/// A session of `msisdn` opened through `gw` (3002 while its partition has no owner serving
/// yet); its Session-Id.
fn opened(gw: &mut Gw, sid: &str, msisdn: &str) -> String {
    let deadline = Instant::now() + WAIT;
    let mut n = 0;
    loop {
        n += 1;
        let r = gw.ask(
            &CcrSpec::new(format!("{sid};{n}"), INITIAL, 0)
                .msisdn(msisdn)
                .mscc(ask(MIB)),
        );
        if r.result_code == 2001 {
            return format!("{sid};{n}");
        }
        assert_eq!(r.result_code, 3002, "{r:?}");
        assert!(
            Instant::now() < deadline,
            "{msisdn} never reached its owner"
        );
    }
}

/// The owner of each partition, as `GET /v1/cluster` names them.
fn owners_of(api: &Http) -> Vec<String> {
    let (status, v) = api.call("GET", "/v1/cluster", None);
    assert_eq!(status, 200, "{v}");
    v["partitions"]
        .as_array()
        .unwrap_or_else(|| panic!("{v:#}"))
        .iter()
        .map(|p| p["owner"]["node"].as_str().unwrap_or("none").to_owned())
        .collect()
}

/// One node serves both partitions of a cluster (nothing caps it: it was first), with an
/// engine for each. A gateway on the other node reaches both; a manager on it is answered
/// about both tenants by their engines, without a hop. A drain must name the partition; it
/// hands acme's partition to the other node while globex's is served throughout, and the
/// draining node goes on, its gauges of the partition it gave back no longer shown. Then it
/// is killed: the other node takes globex's partition too and serves both, every
/// acknowledged report in its ledgers.
#[test]
fn a_node_serves_several_partitions_and_hands_one_over_without_stopping() {
    let nats = nats::Nats::cluster(3);
    let dir = tempfile::tempdir().unwrap();
    // The partitions stay where they are but for the drain (no spreading).
    let extra = format!(
        "partitions = 2\nrebalance = false\n[journal]\ndurability = \"replicated\"\n[charging]\ntenant_files = [\"{}\"]\n",
        globex_file(dir.path()).display()
    );
    let token = dir.path().join("admin-token");
    std::fs::write(&token, "a-token-every-node-of-this-cluster-shares\n").unwrap();
    let urls: Vec<String> = nats.servers.iter().map(|s| s.url()).collect();
    let mut a = Node::start_in("node-a", &urls, Some(&token), &extra, None);
    a.proc.wait_count("serving the partition", 2, WAIT);
    let api_a = a.admin();
    let mut b = Node::start_in("node-b", &urls, Some(&token), &extra, None);
    assert_eq!(owners_of(&api_a), ["node-a", "node-a"]);
    // A gateway on node-b reaches both of node-a's engines.
    let mut gw = Gw::open_at(b.gateways, "pgw.localdomain");
    let acme_dev = device(8700);
    let s_acme = opened(&mut gw, "acme", &acme_dev);
    let s_globex = opened(&mut gw, "globex", "4470000001");
    for sid in [&s_acme, &s_globex] {
        let r = gw.ask(&CcrSpec::new(sid, UPDATE, 1).mscc(report(MIB, true)));
        assert_eq!(r.result_code, 2001, "{sid}: {r:?}");
    }
    // A manager on node-a: each tenant answered by its partition's engine.
    let acme_path = format!("acme/iot/{acme_dev}");
    assert_eq!(usage(&api_a, &acme_path).0, MIB);
    assert_eq!(usage(&api_a, "globex/hank").0, MIB);
    let (status, v) = api_a.call("GET", "/v1/tenants", None);
    assert_eq!(status, 200, "{v}");
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["acme", "alice", "globex"]);
    // A change through node-b (a standby of both) reaches globex's engine on node-a.
    let (status, v) = b.admin().call(
        "POST",
        "/v1/nodes/globex/newbie",
        Some(r#"{"msisdn": "4470000002"}"#),
    );
    assert_eq!(status, 201, "{v}");
    // Each engine's gauges, refreshed once a second.
    for p in ["0", "1"] {
        let line = format!("ocfd_sessions_open{{partition=\"{p}\"}} 1");
        let deadline = Instant::now() + WAIT;
        loop {
            let metrics = metrics_of(&api_a);
            if metrics.contains(&line) {
                break;
            }
            assert!(Instant::now() < deadline, "{line} in:\n{metrics}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // A drain must say which partition of the two.
    let (status, v) = api_a.call("POST", "/v1/cluster/drain", Some("{}"));
    assert_eq!(status, 400, "{v}");
    let said = ocfctl(
        &a,
        &api_a,
        &["cluster", "drain", "--partition", "1", "--to", "node-b"],
    );
    assert!(
        said.contains("partition 1") && said.contains("node-b"),
        "{said}"
    );
    assert_eq!(partition_taken(&mut b), 1);
    a.proc
        .wait_for("handed over: standing by for the partition again", WAIT);
    // acme's session goes on at node-b; globex's at node-a, throughout.
    let mut acme_n = 1;
    let mut globex_n = 1;
    loop {
        globex_n += 1;
        let r = gw.ask(&CcrSpec::new(&s_globex, UPDATE, globex_n).mscc(report(0, true)));
        assert_eq!(r.result_code, 2001, "globex during acme's handover: {r:?}");
        let r = gw.ask(&CcrSpec::new(&s_acme, UPDATE, acme_n + 1).mscc(report(MIB, true)));
        if r.result_code == 2001 {
            acme_n += 1;
            break;
        }
        assert_eq!(r.result_code, 3002, "{r:?}");
        assert!(globex_n < 10_000, "acme's partition was never served again");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        a.proc.child.try_wait().unwrap().is_none(),
        "node-a goes on serving globex"
    );
    assert_eq!(owners_of(&api_a), ["node-a", "node-b"]);
    let metrics = metrics_of(&api_a);
    assert!(
        metrics.contains("ocfd_sessions_open{partition=\"0\"}")
            && !metrics.contains("partition=\"1\""),
        "{metrics}"
    );
    // node-a is killed: node-b takes globex's partition too, and serves both.
    a.proc.signal("KILL");
    a.proc.wait_exit(WAIT);
    loop {
        globex_n += 1;
        let r = gw.ask(&CcrSpec::new(&s_globex, UPDATE, globex_n).mscc(report(MIB, true)));
        if r.result_code == 2001 {
            break;
        }
        assert_eq!(r.result_code, 3002, "{r:?}");
        assert!(globex_n < 10_000, "globex's partition was never taken over");
        std::thread::sleep(Duration::from_millis(20));
    }
    b.proc.wait_count("serving the partition", 2, WAIT);
    let api_b = b.admin();
    assert_eq!(owners_of(&api_b), ["node-b", "node-b"]);
    assert_eq!(usage(&api_b, &acme_path).0, 2 * MIB);
    assert_eq!(usage(&api_b, "globex/hank").0, 2 * MIB);
    let (status, v) = api_b.call("GET", "/v1/nodes/globex/newbie", None);
    assert_eq!(status, 200, "the change made through node-b: {v}");
    for (sid, n) in [(&s_acme, acme_n + 1), (&s_globex, globex_n + 1)] {
        let r = gw.ask(&CcrSpec::new(sid, TERMINATION, n).mscc(report(0, false)));
        assert_eq!(r.result_code, 2001, "{sid}: {r:?}");
    }
    b.proc.signal("TERM");
    assert!(b.proc.wait_exit(WAIT).success(), "{}", b.proc.output());
}

/// A node owning both partitions when another joins hands one over to it by itself (the
/// spread), once: each then owns one, and the sessions of both go on with every report.
#[test]
fn partitions_spread_over_a_node_that_joins() {
    let nats = nats::Nats::cluster(3);
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "partitions = 2\n[journal]\ndurability = \"replicated\"\n[charging]\ntenant_files = [\"{}\"]\n",
        globex_file(dir.path()).display()
    );
    let token = dir.path().join("admin-token");
    std::fs::write(&token, "a-token-every-node-of-this-cluster-shares\n").unwrap();
    let urls: Vec<String> = nats.servers.iter().map(|s| s.url()).collect();
    let mut a = Node::start_in("node-a", &urls, Some(&token), &extra, None);
    a.proc.wait_count("serving the partition", 2, WAIT);
    let api_a = a.admin();
    let mut gw = Gw::open_at(a.gateways, "pgw.localdomain");
    let acme_dev = device(8800);
    let s_acme = opened(&mut gw, "acme", &acme_dev);
    let s_globex = opened(&mut gw, "globex", "4470000001");
    let mut b = Node::start_in("node-b", &urls, Some(&token), &extra, None);
    // A node moves none of the partitions it took in the last 15 s: bounded by that, a look
    // (5 s) and the takeover.
    let moved = partition_taken_within(&mut b, 3 * WAIT);
    a.proc
        .wait_for("spreading the partitions: handing one over", WAIT);
    a.proc
        .wait_for("handed over: standing by for the partition again", WAIT);
    let mut owners = owners_of(&api_a);
    owners.sort();
    assert_eq!(owners, ["node-a", "node-b"]);
    // Both sessions go on (3002 while the moved one is taken over), each report counted once.
    let mut n = [1u32, 1];
    for (i, sid) in [&s_acme, &s_globex].into_iter().enumerate() {
        loop {
            let r = gw.ask(&CcrSpec::new(sid, UPDATE, n[i]).mscc(report(MIB, true)));
            if r.result_code == 2001 {
                break;
            }
            assert_eq!(r.result_code, 3002, "{sid}: {r:?}");
            assert!(n[i] < 1000, "{sid} never served again");
            n[i] += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let api_b = b.admin();
    let (acme_api, globex_api) = if moved == 1 {
        (&api_b, &api_a)
    } else {
        (&api_a, &api_b)
    };
    assert_eq!(usage(acme_api, &format!("acme/iot/{acme_dev}")).0, MIB);
    assert_eq!(usage(globex_api, "globex/hank").0, MIB);
    for (i, sid) in [&s_acme, &s_globex].into_iter().enumerate() {
        let r = gw.ask(&CcrSpec::new(sid, TERMINATION, n[i] + 1).mscc(report(0, false)));
        assert_eq!(r.result_code, 2001, "{sid}: {r:?}");
    }
    assert_eq!(
        a.proc.count("spreading the partitions"),
        1,
        "one move evens two partitions over two nodes"
    );
    for node in [&mut a, &mut b] {
        node.proc.signal("TERM");
        assert!(
            node.proc.wait_exit(WAIT).success(),
            "{}",
            node.proc.output()
        );
    }
}

/// The partition a node took over, as its log says, waiting at most `limit`.
fn partition_taken_within(node: &mut Node, limit: Duration) -> u32 {
    let line = node.proc.wait_for("took the partition over", limit);
    line.split("partition=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no partition in {line}"))
}

/// The partition a node took over, as its log says.
fn partition_taken(node: &mut Node) -> u32 {
    partition_taken_within(node, WAIT)
}

/// Two partitions over three nodes: tenants hashed apart (acme in 1, globex in 0), each
/// partition owned by one node, the third standing by for both. A gateway on any node reaches
/// both tenants; each engine holds only its own tenants; requests without a Subscription-Id
/// follow their session. The owner of acme's partition is killed: the standby takes that
/// partition over while globex's is served throughout, and acme's sessions go on there with
/// every acknowledged report.
#[test]
fn tenants_are_partitioned_over_the_nodes() {
    let nats = nats::Nats::cluster(3);
    let dir = tempfile::tempdir().unwrap();
    let (mut acme_owner, globex_owner, mut c, token) = two_partitions(
        &nats,
        dir.path(),
        "[journal]\ndurability = \"replicated\"\n",
    );
    // Each engine holds its partition's tenants only (asked as a forwarded request, which a
    // node answers itself).
    let here = |api: &Http, path: &str| {
        ocf::ctl::http::Client {
            addr: api.addr,
            token: api.token.clone(),
            timeout: WAIT,
        }
        .call_forwarded("GET", path, None, "test")
        .unwrap()
        .status
    };
    let acme_api = acme_owner.admin();
    assert_eq!(here(&acme_api, "/v1/usage/acme"), 200);
    assert_eq!(
        here(&acme_api, "/v1/usage/globex"),
        404,
        "globex is not in partition 1"
    );
    let mut g_api = globex_owner_api(&globex_owner);
    assert_eq!(
        here(&g_api, "/v1/usage/acme"),
        404,
        "acme is not in partition 0"
    );
    // Asked as a manager asks, either owner answers for both (the other's through it).
    let (status, v) = acme_api.call("GET", "/v1/usage/globex", None);
    assert_eq!(status, 200, "{v}");
    // A gateway on the standby reaches both partitions' owners (once its router has read both
    // leases).
    let mut gw = Gw::open_at(c.gateways, "pgw.localdomain");
    let hank = "4470000001";
    let acme_dev = device(8600);
    let s_acme = opened(&mut gw, "acme", &acme_dev);
    let s_globex = opened(&mut gw, "globex", hank);
    // Updates without a Subscription-Id go where their session is.
    for (sid, n) in [(&s_acme, 1), (&s_globex, 1)] {
        let r = gw.ask(&CcrSpec::new(sid, UPDATE, n).mscc(report(MIB, true)));
        assert_eq!(r.result_code, 2001, "{sid}: {r:?}");
    }
    assert_eq!(usage(&g_api, "globex/hank").0, MIB);
    assert_eq!(
        usage(&acme_owner.admin(), &format!("acme/iot/{acme_dev}")).0,
        MIB
    );
    // A gateway on one owner reaches the other partition's owner through its router.
    let mut gw2 = Gw::open_at(globex_owner.gateways, "pgw2.localdomain");
    let s2 = opened(&mut gw2, "acme-via-globex-owner", &device(8601));
    // A manager adds a device to globex on its owner: every router finds it (the shared
    // directory), here the standby's. Through the other owner, the change is refused with the
    // owner to ask.
    let new_device =
        r#"{"msisdn": "4470000002", "limits": [{"unit": "octets", "amount": "10 MiB"}]}"#;
    let (status, v) = g_api.call("POST", "/v1/nodes/globex/newbie", Some(new_device));
    assert_eq!(status, 201, "{v}");
    // The same kind of change sent to acme's owner goes on to globex's owner, and its answer
    // comes back.
    let (status, v) = acme_owner.admin().call(
        "POST",
        "/v1/nodes/globex/elsewhere",
        Some(r#"{"msisdn": "4470000003"}"#),
    );
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        here(&g_api, "/v1/nodes/globex/elsewhere"),
        200,
        "made on globex's owner"
    );
    // A forwarded request that reaches a node not owning its tenant (the lease moved on the
    // way) is not sent further: 421, naming the owner.
    let wrong = ocf::ctl::http::Client {
        addr: acme_owner.admin().addr,
        token: std::fs::read_to_string(&token)
            .ok()
            .map(|t| t.trim().to_owned()),
        timeout: WAIT,
    }
    .call_forwarded(
        "POST",
        "/v1/nodes/globex/third",
        Some(r#"{"msisdn": "4470000004"}"#),
        "node-x",
    )
    .unwrap();
    assert_eq!(wrong.status, 421, "{wrong:?}");
    assert!(
        wrong.body.contains("partition 0") && wrong.body.contains(&globex_owner.name),
        "{wrong:?}"
    );
    let s_new = opened(&mut gw, "newbie", "4470000002");
    let r = gw.ask(&CcrSpec::new(&s_new, TERMINATION, 1).mscc(report(MIB, false)));
    assert_eq!(r.result_code, 2001, "{r:?}");
    assert_eq!(usage(&g_api, "globex/newbie").0, MIB);
    // ocfctl cluster shows both partitions, each with its owner and the standby.
    let text = ocfctl(&globex_owner, &g_api, &["cluster"]);
    for p in ["partition 0: owner", "partition 1: owner"] {
        assert!(text.contains(p), "{text}");
    }
    assert!(
        text.lines()
            .filter(|l| l.starts_with("node-c") && l.contains("standby"))
            .count()
            == 2,
        "{text}"
    );
    // The standby's admin listener: the cluster view, its router's counts, nothing else.
    let standby_api = c.admin();
    let text = ocfctl(&c, &standby_api, &["cluster"]);
    assert!(text.contains("partition 1: owner"), "{text}");
    // A manager's request about a tenant goes on to its owner; the rest has no engine here.
    let (status, v) = standby_api.call("GET", "/v1/usage/globex/hank", None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["node"]["limits"][0]["used"], MIB, "{v}");
    // The tenants' list is gathered from every partition's owner, on a standby and on an
    // owner alike; the rest has no engine here.
    let names = |api: &Http| {
        let (status, v) = api.call("GET", "/v1/tenants", None);
        assert_eq!(status, 200, "{v}");
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&standby_api), ["acme", "alice", "globex"]);
    assert_eq!(names(&g_api), ["acme", "alice", "globex"]);
    let listed = ocfctl(&c, &standby_api, &["tenants"]);
    assert!(
        listed.contains("globex") && listed.contains("acme"),
        "{listed}"
    );
    let (status, _) = standby_api.call("GET", "/v1/events", None);
    assert_eq!(status, 503, "a standby has no engine for the events");
    let (status, _) = Http {
        addr: standby_api.addr,
        token: None,
    }
    .call("GET", "/v1/cluster", None);
    assert_eq!(status, 401);
    assert!(
        metrics_of(&standby_api)
            .contains("ocfd_cluster_routed_requests_total{outcome=\"relayed\"}")
    );
    // Nobody's subscriber, and an update for a session no router knows: refused by the router.
    let r = gw.ask(
        &CcrSpec::new("nobody", INITIAL, 0)
            .msisdn("4499999999")
            .mscc(ask(MIB)),
    );
    assert_eq!(r.result_code, 5030, "{r:?}");
    let r = gw.ask(&CcrSpec::new("unknown;1", UPDATE, 1).mscc(report(MIB, true)));
    assert_eq!(r.result_code, 5002, "{r:?}");
    // acme's owner is killed: the standby takes partition 1 over; globex is served throughout.
    acme_owner.proc.signal("KILL");
    let killed = Instant::now();
    acme_owner.proc.wait_exit(WAIT);
    let mut globex_n = 1;
    let mut acme_n = 1;
    let failover = loop {
        globex_n += 1;
        let r = gw.ask(&CcrSpec::new(&s_globex, UPDATE, globex_n).mscc(report(0, true)));
        assert_eq!(r.result_code, 2001, "globex during acme's failover: {r:?}");
        let r = gw.ask(&CcrSpec::new(&s_acme, UPDATE, acme_n + 1).mscc(report(MIB, true)));
        if r.result_code == 2001 {
            acme_n += 1;
            break killed.elapsed();
        }
        assert_eq!(r.result_code, 3002, "{r:?}");
        assert!(killed.elapsed() < WAIT, "partition 1 was never taken over");
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("partition 1 served again {failover:?} after its owner's SIGKILL");
    assert_eq!(partition_taken(&mut c), 1);
    c.serving();
    let api = c.admin();
    // Both acknowledged reports (the one before the kill and the one after).
    assert_eq!(usage(&api, &format!("acme/iot/{acme_dev}")).0, 2 * MIB);
    let r = gw2.ask(&CcrSpec::new(&s2, TERMINATION, 1).mscc(report(MIB, false)));
    assert_eq!(r.result_code, 2001, "{r:?}");
    assert_eq!(usage(&api, &format!("acme/iot/{}", device(8601))).0, MIB);
    let r = gw.ask(&CcrSpec::new(&s_acme, TERMINATION, acme_n + 1).mscc(report(0, false)));
    assert_eq!(r.result_code, 2001, "{r:?}");
    g_api = globex_owner_api(&globex_owner);
    assert_eq!(usage(&g_api, "globex/hank").0, MIB);
    // The router's counts, as the node's metrics give them once it serves: what it relayed,
    // what it could not place (the unknown subscriber and session), the 3002s of the failover.
    let metrics = metrics_of(&api);
    for outcome in ["relayed", "unroutable", "unable_to_deliver"] {
        let line = format!("ocfd_cluster_routed_requests_total{{outcome=\"{outcome}\"}}");
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    }
    assert!(
        metrics.contains("ocfd_cluster_routed_requests_total{outcome=\"unroutable\"} 2"),
        "{metrics}"
    );
}

fn globex_owner_api(n: &Node) -> Http {
    let line = n
        .proc
        .output()
        .lines()
        .find(|l| l.contains("listening transport=\"http\""))
        .map(str::to_owned)
        .expect("the owner's admin API");
    let token = std::fs::read_to_string(&n.token_file).unwrap();
    Http {
        addr: logged_addr(&line),
        token: Some(token.trim().to_owned()),
    }
}

/// Snapshots in JetStream's object store and the log cut behind them. The owner publishes a
/// snapshot a second (`snapshot_interval_s = 1`) and cuts its log below the one before. A
/// standby frozen (SIGSTOP) while the log is cut past it starts its copy again from the
/// snapshot when it runs again; a node started on an empty disk after the cut starts from the
/// snapshot too. The owner is killed, then its successor: each time the node taking over
/// has every acknowledged report and the dead owner's reservations, and the sessions go on.
#[test]
fn a_cut_log_is_taken_over_from_the_partitions_snapshot() {
    let nats = nats::Nats::cluster(3);
    let cfg = "[journal]\ndurability = \"replicated\"\nsnapshot_interval_s = 1\n[charging]\nvalidity_time_s = 600\n";
    let mut a = Node::start("node-a", &nats, cfg);
    let a_addr = a.serving();
    let api_a = a.admin();
    let mut b = Node::start("node-b", &nats, cfg);
    let mut gw = Gw::open_at(a_addr, "pgw.localdomain");
    let sessions: Vec<String> = (0..5).map(|i| format!("pgw;cut;{i}")).collect();
    let mut numbers = vec![0u32; sessions.len()];
    for (i, sid) in sessions.iter().enumerate() {
        let r = gw.ask(
            &CcrSpec::new(sid, INITIAL, 0)
                .msisdn(&device(8600 + i as u64))
                .mscc(ask(MIB)),
        );
        assert_eq!(r.result_code, 2001, "{r:?}");
    }
    // A manager's change, so that the snapshots carry changes beyond the start's import.
    let (status, v) = api_a.call(
        "PUT",
        &format!("/v1/blocked/acme/iot/{}", device(8699)),
        None,
    );
    assert_eq!(status, 200, "{v}");
    let mut used = 0u64;
    // Every session reports 1 KiB, `times` times, acknowledged.
    fn rounds(gw: &mut Gw, sessions: &[String], numbers: &mut [u32], used: &mut u64, times: u32) {
        for _ in 0..times {
            for (i, sid) in sessions.iter().enumerate() {
                numbers[i] += 1;
                let r = gw.ask(&CcrSpec::new(sid, UPDATE, numbers[i]).mscc(report(1024, true)));
                assert_eq!(r.result_code, 2001, "{r:?}");
                *used += 1024;
            }
        }
    }
    rounds(&mut gw, &sessions, &mut numbers, &mut used, 1);
    a.proc.wait_for("partition snapshot published", WAIT);

    // node-b frozen; the owner goes on, publishing and cutting, until the log is cut past it
    // (past the 500 entries its consumer may have been sent before it froze, too).
    b.proc.signal("STOP");
    let cuts = a.proc.count("the partition's log cut");
    for _ in 0..20 {
        if a.proc.count("the partition's log cut") >= cuts + 3 {
            break;
        }
        let published = a.proc.count("partition snapshot published");
        rounds(&mut gw, &sessions, &mut numbers, &mut used, 120);
        a.proc
            .wait_count("partition snapshot published", published + 1, WAIT);
    }
    a.proc
        .wait_count("the partition's log cut", cuts + 3, Duration::ZERO);
    // (node-b's entry in the node table stands still meanwhile.)
    let (status, view) = api_a.call("GET", "/v1/cluster", None);
    assert_eq!(status, 200, "{view}");
    let (first, snapshot) = (
        view["log_first"].as_u64().unwrap(),
        view["snapshot_entry"].as_u64().unwrap(),
    );
    assert!(1 < first && first <= snapshot + 1, "{view:#}");
    // Its metrics say which snapshot it published last (the alert's clock is beside it).
    let m = metrics_of(&api_a);
    assert!(
        m.contains("ocfd_cluster_snapshot_entry{partition=\"0\"}")
            && m.contains("ocfd_cluster_snapshot_timestamp_seconds{partition=\"0\"}"),
        "{m}"
    );
    assert!(
        ocfctl(&a, &api_a, &["cluster"]).contains(&format!("log from entry {first} to")),
        "ocfctl cluster names the log's first entry"
    );

    // A node on an empty disk starts from the snapshot, and the frozen one again from it.
    let mut c = Node::start("node-c", &nats, cfg);
    c.proc
        .wait_for("copy started from the partition's snapshot", WAIT);
    b.proc.signal("CONT");
    b.proc.wait_for("entries were cut from the log", WAIT);
    b.proc
        .wait_for("copy started from the partition's snapshot", WAIT);
    rounds(&mut gw, &sessions, &mut numbers, &mut used, 1);
    let (used_a, mut reserved) = usage(&api_a, "acme/iot");
    assert_eq!(used_a, used);
    // A standby puts each newer snapshot in its copy (a takeover then replays from it).
    c.proc
        .wait_for("the partition's snapshot is in the copy", WAIT);
    // Both copies up to date before the owner dies.
    cluster_view(&api_a, 3);

    // The owner killed, then its successor: each time the next one has it all.
    let mut owner = a;
    let mut standbys = vec![b, c];
    for _ in 0..2 {
        owner.proc.signal("KILL");
        let killed = Instant::now();
        owner.proc.wait_exit(WAIT);
        let next = loop {
            if let Some(i) = standbys.iter_mut().position(|n| {
                n.proc
                    .saw_within("took the partition over", Duration::from_millis(50))
            }) {
                break i;
            }
            assert!(killed.elapsed() < WAIT, "no standby took over");
        };
        let mut new = standbys.remove(next);
        let addr = new.serving();
        let api = new.admin();
        let (u, held) = usage(&api, "acme/iot");
        assert_eq!(u, used, "{}: every acknowledged report, once", new.name);
        assert_eq!(
            held, reserved,
            "{}: the reservations stay counted",
            new.name
        );
        let probe = CcrSpec::new(&sessions[0], UPDATE, numbers[0] + 1).mscc(report(0, true));
        let (g, r) = first_answer(addr, &probe, killed + WAIT);
        eprintln!(
            "failover from a snapshot: {} served {:?} after the owner's SIGKILL",
            new.name,
            killed.elapsed()
        );
        assert_eq!(r.result_code, 2001, "{} after the kill: {r:?}", new.name);
        numbers[0] += 1;
        gw = g;
        rounds(&mut gw, &sessions, &mut numbers, &mut used, 1);
        reserved = usage(&api, "acme/iot").1;
        if !standbys.is_empty() {
            cluster_view(&api, 2);
        }
        owner = new;
    }
    for (i, sid) in sessions.iter().enumerate() {
        let r = gw.ask(&CcrSpec::new(sid, TERMINATION, numbers[i] + 1).mscc(report(0, false)));
        assert_eq!(r.result_code, 2001, "{r:?}");
    }
    let api = owner.admin();
    assert_eq!(usage(&api, "acme/iot"), (used, 0), "every session ended");
    owner.proc.signal("TERM");
    assert!(
        owner.proc.wait_exit(WAIT).success(),
        "{}",
        owner.proc.output()
    );
}

/// freeDiameter's library folder (Debian's `freediameter-extensions`).
const FD_LIB: &str = "/usr/lib/freeDiameter";

/// freeDiameter as a DRA in front of the cluster, its peer table made by `ocfctl cluster peers
/// --freediameter`: a gateway connected to it reaches the partition's owner directly when it
/// addresses the owner (Destination-Host), and through the standby's router when it
/// addresses the standby; both are charged on the owner.
#[test]
fn a_dra_routes_by_destination_host_with_the_peer_table_the_nodes_advertise() {
    require_tool("freeDiameterd", "freediameterd freediameter-extensions");
    assert!(
        std::path::Path::new(FD_LIB)
            .join("dict_dcca_3gpp.fdx")
            .exists(),
        "apt-get install freediameter-extensions"
    );
    let nats = nats::Nats::start();
    let mut a = Node::start("node-a", &nats, "replicas = 1\n");
    let a_addr = a.serving();
    let api_a = a.admin();
    let mut b = Node::start("node-b", &nats, "replicas = 1\n");
    let api_b = b.admin();
    // node-b's router relays once the lease names where the owner serves (from its first
    // renewal on).
    let deadline = Instant::now() + WAIT;
    while cluster_view(&api_a, 2)["owner"]["diameter"] != a_addr.to_string() {
        assert!(Instant::now() < deadline, "the lease never named {a_addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Both nodes in the peer table (each writes its entry every lease look).
    let deadline = Instant::now() + WAIT;
    let peers = loop {
        let out = ocfctl(&a, &api_a, &["cluster", "peers", "--freediameter"]);
        if out.lines().count() == 2 {
            break out;
        }
        assert!(Instant::now() < deadline, "{out}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        peers.contains(&format!(
            "ConnectPeer = \"node-a.localdomain\" {{ ConnectTo = \"127.0.0.1\"; Port = {}; No_TLS; No_SCTP; }};",
            a_addr.port()
        )),
        "{peers}"
    );
    assert!(
        peers.contains(&format!(
            "ConnectPeer = \"node-b.localdomain\" {{ ConnectTo = \"127.0.0.1\"; Port = {};",
            b.gateways.port()
        )),
        "{peers}"
    );
    let table = ocfctl(&b, &api_b, &["cluster", "peers"]);
    assert!(
        table.contains("node-a.localdomain") && table.contains("localdomain"),
        "{table}"
    );

    // The DRA: the nodes as its peers, the gateway let in by its whitelist.
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl.conf");
    std::fs::write(&acl, "ALLOW_IPSEC pgw.localdomain\n").unwrap();
    let dra_port = free_port();
    let conf = dir.path().join("dra.conf");
    std::fs::write(
        &conf,
        format!(
            "Identity = \"dra.localdomain\";\nRealm = \"localdomain\";\nPort = {dra_port};\nSecPort = 0;\nNo_SCTP;\nNo_IPv6;\nTcTimer = 6;\nLoadExtension = \"{FD_LIB}/dict_nasreq.fdx\";\nLoadExtension = \"{FD_LIB}/dict_dcca.fdx\";\nLoadExtension = \"{FD_LIB}/dict_dcca_3gpp.fdx\";\nLoadExtension = \"{FD_LIB}/acl_wl.fdx\" : \"{}\";\n{peers}",
            acl.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new("freeDiameterd");
    cmd.arg("-c").arg(&conf).arg("-dd");
    let mut dra = Watched::spawn("freeDiameterd", cmd);
    for host in ["node-a.localdomain", "node-b.localdomain"] {
        dra.wait_for(&format!("'STATE_WAITCEA'\t-> 'STATE_OPEN'\t'{host}'"), WAIT);
    }
    let mut gw = Gw::open_at(
        SocketAddr::from(([127, 0, 0, 1], dra_port)),
        "pgw.localdomain",
    );
    let relayed = |api: &Http| {
        metrics_of(api)
            .lines()
            .find(|l| l.starts_with("ocfd_cluster_routed_requests_total{outcome=\"relayed\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = relayed(&api_b);
    // Addressed to the standby: the DRA hands it to node-b, whose router relays it.
    let r = gw.ask(
        &CcrSpec::new("dra;1", INITIAL, 0)
            .destination_host("node-b.localdomain")
            .msisdn(&device(8700))
            .mscc(ask(MIB)),
    );
    assert_eq!(r.result_code, 2001, "{r:?}");
    assert_eq!(relayed(&api_b), before + 1, "through node-b's router");
    // Addressed to the owner: straight to it.
    let r = gw.ask(
        &CcrSpec::new("dra;2", INITIAL, 0)
            .destination_host("node-a.localdomain")
            .msisdn(&device(8701))
            .mscc(ask(MIB)),
    );
    assert_eq!(r.result_code, 2001, "{r:?}");
    assert_eq!(relayed(&api_b), before + 1, "not through node-b");
    // The DRA's own account: one CCR to each node.
    let out = dra.output();
    for host in ["node-a.localdomain", "node-b.localdomain"] {
        // (It relays what it does not serve without reading it: "no model".)
        let sent = format!("SENT to '{host}': (no model)4/272 f:R");
        assert_eq!(out.matches(&sent).count(), 1, "{sent}:\n{out}");
    }
    for (sid, n) in [("dra;1", 8700u64), ("dra;2", 8701)] {
        let (_, held) = usage(&api_a, &format!("acme/iot/{}", device(n)));
        assert!(held > 0, "{sid}: charged on the owner");
        let r = gw.ask(&CcrSpec::new(sid, TERMINATION, 1).mscc(report(1024, false)));
        assert_eq!(r.result_code, 2001, "{r:?}");
    }
    assert_eq!(usage(&api_a, "acme/iot").0, 2048);
    dra.signal("TERM");
    assert!(dra.wait_exit(WAIT).success(), "freeDiameterd");
    for n in [&mut a, &mut b] {
        n.proc.signal("TERM");
        assert!(n.proc.wait_exit(WAIT).success(), "{}", n.proc.output());
    }
}

/// The owner's disk is full when a manager makes a change (a policy of 5 KiB, more than the
/// change log's last page holds): the partition's log takes it but the owner's own change log
/// cannot, so the owner charges no more, gives its lease up and exits 75; the standby takes
/// over with the change made and every acknowledged report, and the manager was told where
/// the change stands (503).
#[test]
fn an_owner_whose_disk_is_full_hands_its_partition_over_with_the_change() {
    let fs = Tmpfs::mount(16);
    let nats = nats::Nats::start();
    let urls: Vec<String> = nats.servers.iter().map(|s| s.url()).collect();
    let mut a = Node::start_in("node-a", &urls, None, "replicas = 1\n", Some(&fs.point));
    let a_addr = a.serving();
    let api_a = a.admin();
    let mut b = Node::start("node-b", &nats, "replicas = 1\n");
    let mut gw = Gw::open_at(a_addr, "pgw.localdomain");
    let r = gw.ask(
        &CcrSpec::new("full;1", INITIAL, 0)
            .msisdn(&device(8800))
            .mscc(ask(MIB)),
    );
    assert_eq!(r.result_code, 2001, "{r:?}");
    let r = gw.ask(&CcrSpec::new("full;1", UPDATE, 1).mscc(report(MIB, true)));
    assert_eq!(r.result_code, 2001, "{r:?}");
    cluster_view(&api_a, 2);

    fill(&fs.point.join("filler"));
    let filters: Vec<String> = (0..300)
        .map(|i| format!("\"walled-garden-{i:04}\""))
        .collect();
    let policy = format!(
        "{{\"final_unit_action\":\"restrict\",\"filter_ids\":[{}]}}",
        filters.join(",")
    );
    let (status, v) = api_a.call("PUT", "/v1/policy/acme", Some(&policy));
    assert_eq!(status, 503, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("takes effect on the node taking the partition over")),
        "{v}"
    );
    a.proc.wait_for("cannot be logged here", WAIT);
    let code = a.proc.wait_exit(WAIT);
    assert_eq!(code.code(), Some(75), "{}", a.proc.output());
    b.proc.wait_for("took the partition over", WAIT);
    let b_addr = b.serving();
    let api_b = b.admin();
    let (_, p) = api_b.call("GET", "/v1/policy/acme", None);
    assert_eq!(
        p["final_unit_action"], "restrict",
        "the change the log took: {p}"
    );
    assert_eq!(p["filter_ids"].as_array().map(Vec::len), Some(300), "{p}");
    assert_eq!(usage(&api_b, "acme/iot").0, MIB, "the acknowledged report");
    let (_gw, r) = first_answer(
        b_addr,
        &CcrSpec::new("full;1", TERMINATION, 2).mscc(report(0, false)),
        Instant::now() + WAIT,
    );
    assert_eq!(r.result_code, 2001, "{r:?}");
    b.proc.signal("TERM");
    assert!(b.proc.wait_exit(WAIT).success(), "{}", b.proc.output());
}

/// Gateways over TLS with several partitions: every node's router takes TLS/TCP as an engine
/// would (the gateway's certificate from the operator's CA, naming the Origin-Host its CER
/// gives) and relays to both partitions; a certificate naming another host gets 3010, until a
/// reload stops that check.
#[test]
fn a_gateway_over_tls_reaches_every_partition_through_any_node() {
    let nats = nats::Nats::cluster(3);
    let dir = tempfile::tempdir().unwrap();
    let ca = common::pki::Ca::new("operator peering CA");
    let nodes = [
        "node-a.localdomain",
        "node-b.localdomain",
        "node-c.localdomain",
    ];
    let server = ca.issue(dir.path(), "nodes", &nodes);
    let pgw = ca.issue(dir.path(), "pgw", &["pgw.localdomain"]);
    let sgw = ca.issue(dir.path(), "sgw", &["sgw.localdomain"]);
    let ca_file = ca.write(dir.path(), "ca.pem");
    let tls = format!(
        "[diameter.tls]\nlisten = [\"127.0.0.1:0\"]\ncertificate = \"{}\"\nprivate_key = \"{}\"\npeer_ca = \"{}\"\n",
        server.cert.display(),
        server.key.display(),
        ca_file.display()
    );
    let (mut acme_owner, mut globex_owner, mut standby, _token) =
        two_partitions(&nats, dir.path(), &tls);
    let tls13: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    for node in [&mut standby, &mut acme_owner] {
        let addr = logged_addr(&node.proc.wait_for(
            "routing gateways to the partitions' owners transport=\"tls\"",
            WAIT,
        ));
        let host = format!("{}.localdomain", node.name);
        let mut conn =
            Conn::connect_tls(addr, tls_client(&ca_file, Some(&pgw), tls13), &host).unwrap();
        assert_eq!(result_code(&conn.handshake("pgw.localdomain")), 2001);
        let mut gw = Gw::over(conn);
        for (sid, subscriber) in [("acme", device(8950)), ("globex", "4470000001".to_owned())] {
            let sid = format!("tls;{};{sid}", node.name);
            let r = gw.ask(
                &CcrSpec::new(&sid, INITIAL, 0)
                    .msisdn(&subscriber)
                    .mscc(ask(MIB)),
            );
            assert_eq!(r.result_code, 2001, "{sid} through {}: {r:?}", node.name);
            let r = gw.ask(&CcrSpec::new(&sid, TERMINATION, 1).mscc(report(1024, false)));
            assert_eq!(r.result_code, 2001, "{r:?}");
        }
        // A certificate for another host: its CER for pgw is refused by the router.
        let mut conn =
            Conn::connect_tls(addr, tls_client(&ca_file, Some(&sgw), tls13), &host).unwrap();
        assert_eq!(result_code(&conn.handshake("pgw.localdomain")), 3010);
    }
    // A reload reads the router's TLS settings again: with the Origin-Host no longer checked
    // against the certificate, the same CER is taken.
    let file = standby._dir.path().join("ocfd.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let line = format!("peer_ca = \"{}\"\n", ca_file.display());
    assert!(text.contains(&line), "{text}");
    std::fs::write(
        &file,
        text.replace(
            &line,
            &format!("{line}origin_host_in_certificate = false\n"),
        ),
    )
    .unwrap();
    standby.proc.signal("HUP");
    standby
        .proc
        .wait_for("the router's TLS settings read again", WAIT);
    let addr = logged_addr(&standby.proc.wait_for(
        "routing gateways to the partitions' owners transport=\"tls\"",
        WAIT,
    ));
    let mut conn = Conn::connect_tls(
        addr,
        tls_client(&ca_file, Some(&sgw), tls13),
        "node-c.localdomain",
    )
    .unwrap();
    assert_eq!(result_code(&conn.handshake("pgw.localdomain")), 2001);
    for node in [&mut standby, &mut acme_owner, &mut globex_owner] {
        node.proc.signal("TERM");
        node.proc.wait_exit(WAIT);
    }
}
