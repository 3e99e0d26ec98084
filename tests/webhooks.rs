//! Webhooks end to end: a real HTTP receiver on 127.0.0.1 that fails and then recovers gets
//! every event once, in order, signed with HMAC-SHA256; over TLS with a configured CA; only
//! its tenants' events; events older than max_age_s are given up and counted; and a bad
//! webhook setting stops the start with exit status 64.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use ocf_loadtest::gy::{CcrSpec, INITIAL, MsccSpec, TERMINATION};

const MIB: u64 = 1 << 20;
const SECRET: &str = "a-webhook-secret-of-some-length";

/// One POST as the receiver saw it, and the status it answered.
#[derive(Debug)]
struct Post {
    headers: Headers,
    body: Vec<u8>,
    status: u16,
}

impl Post {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// Header names and values.
type Headers = Vec<(String, String)>;

/// Reads one HTTP/1.1 request (head and Content-Length body).
fn read_request(r: &mut impl BufRead) -> Option<(Headers, Vec<u8>)> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    if !line.starts_with("POST ") {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))?
        .1
        .parse()
        .ok()?;
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((headers, body))
}

/// A receiver on 127.0.0.1 that answers the first `failures` POSTs 500 and the rest 200, and
/// hands every POST to the test.
fn receiver(failures: usize) -> (SocketAddr, mpsc::Receiver<Post>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, conn) in l.incoming().enumerate() {
            let Ok(mut s) = conn else { continue };
            s.set_read_timeout(Some(WAIT)).ok();
            let Some((headers, body)) = read_request(&mut BufReader::new(&mut s)) else {
                continue;
            };
            let status = if n < failures { 500 } else { 200 };
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if tx
                .send(Post {
                    headers,
                    body,
                    status,
                })
                .is_err()
            {
                return;
            }
        }
    });
    (addr, rx)
}

/// Posts until `n` of them were answered 200 (bounded).
fn taken(rx: &mpsc::Receiver<Post>, n: usize, all: &mut Vec<Post>) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + WAIT;
    while all.iter().filter(|p| p.status == 200).count() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(p) => all.push(p),
            Err(_) => panic!("{n} deliveries expected, got {all:?}"),
        }
    }
    all.iter()
        .filter(|p| p.status == 200)
        .map(Post::json)
        .collect()
}

fn hex_hmac(body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// An acme/iot device (10 MiB) used to 80% and then 100% in one session: two events.
fn use_up(gw: &mut Gw, device: &str, sid: &str) {
    let i = gw.ask(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(device)
            .mscc(MsccSpec::ask(10, MIB)),
    );
    assert_eq!(i.result_code, 2001);
    let t = gw.ask(&CcrSpec::new(sid, TERMINATION, 1).mscc(MsccSpec::report(10, 10 * MIB, false)));
    assert_eq!(t.result_code, 2001);
}

fn metric(api: &Http, name: &str) -> Option<f64> {
    let c = ocf::ctl::http::Client {
        addr: api.addr,
        token: None,
        timeout: WAIT,
    };
    let text = c.call("GET", "/metrics", None).ok()?.body;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits (bounded) until a metric reaches `at_least`.
fn wait_metric(api: &Http, name: &str, at_least: f64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = metric(api, name);
        if v.is_some_and(|v| v >= at_least) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} = {v:?}, {at_least} expected"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn hook(dir: &std::path::Path, name: &str, url: &str, extra: &str) -> String {
    let secret = dir.join(format!("{name}.secret"));
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    format!(
        "\n[[webhooks]]\nname = \"{name}\"\nurl = \"{url}\"\nsecret_file = \"{}\"\nretry_initial_ms = 20\nretry_max_ms = 200\n{extra}\n",
        secret.display()
    )
}

#[test]
fn a_receiver_that_fails_then_recovers_gets_every_event_once_in_order() {
    let files = tempfile::tempdir().unwrap();
    let (addr, rx) = receiver(3);
    let (other, other_rx) = receiver(0);
    let config = hook(files.path(), "ops", &format!("http://{addr}/hook"), "")
        + &hook(
            files.path(),
            "alice-only",
            &format!("http://{other}/hook"),
            "tenants = [\"alice\"]",
        );
    let mut d = Daemon::start(&config);
    let mut gw = Gw::open(&d, "pgw.localdomain");
    use_up(&mut gw, "15551008300", "pgw.localdomain;hook;1");
    use_up(&mut gw, "15551008301", "pgw.localdomain;hook;2");
    let mut all = Vec::new();
    let got = taken(&rx, 4, &mut all);
    // The first three tries of the first event failed; every event came once, in order.
    assert_eq!(all.iter().filter(|p| p.status == 500).count(), 3);
    let ids: Vec<u64> = got.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "in order, once: {ids:?}"
    );
    let api = d.admin();
    let (_, outbox) = api.call("GET", "/v1/events", None);
    let outbox: Vec<u64> = outbox["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, outbox, "what the outbox holds, in its order");
    let kinds: Vec<&str> = got.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "threshold_crossed",
            "limit_reached",
            "threshold_crossed",
            "limit_reached"
        ]
    );
    // Signed, and the id in a header too; no outbox bookkeeping in the body.
    for p in all.iter().filter(|p| p.status == 200) {
        assert_eq!(
            p.header("X-Ocfd-Signature"),
            Some(format!("sha256={}", hex_hmac(&p.body)).as_str())
        );
        let e = p.json();
        assert_eq!(
            p.header("X-Ocfd-Event-Id").map(str::to_owned),
            Some(e["id"].to_string())
        );
        assert_eq!(p.header("Content-Type"), Some("application/json"));
        assert!(e.get("seq").is_none(), "{e}");
    }
    wait_metric(&api, "ocfd_webhook_delivered_total{webhook=\"ops\"}", 4.0);
    assert_eq!(
        metric(&api, "ocfd_webhook_failures_total{webhook=\"ops\"}"),
        Some(3.0)
    );
    // The alice-only endpoint skipped acme's events without a POST.
    wait_metric(
        &api,
        "ocfd_webhook_cursor{webhook=\"alice-only\"}",
        *ids.last().unwrap() as f64,
    );
    assert!(
        other_rx.try_recv().is_err(),
        "acme's events went to alice's endpoint"
    );

    // kill -9 once the cursor is past them (it is written before it is shown): what comes
    // after is delivered once, nothing before again.
    wait_metric(
        &api,
        "ocfd_webhook_cursor{webhook=\"ops\"}",
        *ids.last().unwrap() as f64,
    );
    drop(gw);
    d.kill9();
    let mut d = Daemon::start_in(d.into_dir(), &config, &[]);
    let mut gw = Gw::open(&d, "pgw.localdomain");
    use_up(&mut gw, "15551008302", "pgw.localdomain;hook;3");
    let before = all.iter().filter(|p| p.status == 200).count();
    let got = taken(&rx, before + 2, &mut all);
    let ids_after: Vec<u64> = got.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(
        ids_after.windows(2).all(|w| w[0] < w[1]),
        "nothing delivered twice across the restart: {ids_after:?}"
    );
    assert_eq!(got[before]["path"], "acme/iot/15551008302");
    assert!(d.terminate().success());
}

/// A receiver over TLS with a certificate `ca` signed for 127.0.0.1.
fn tls_receiver(dir: &std::path::Path, ca: &pki::Ca) -> (SocketAddr, mpsc::Receiver<Post>) {
    let files = ca.issue(dir, "hooks", &["127.0.0.1"]);
    let certs: Vec<rustls_pki_types::CertificateDer<'static>> =
        rustls_pki_types::pem::PemObject::pem_file_iter(&files.cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let key = rustls_pki_types::pem::PemObject::from_pem_file(&files.key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(s) = conn else { continue };
            s.set_read_timeout(Some(WAIT)).ok();
            let Ok(c) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(c, s);
            let Some((headers, body)) = read_request(&mut BufReader::new(&mut tls)) else {
                continue;
            };
            let _ = write!(tls, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
            if tx
                .send(Post {
                    headers,
                    body,
                    status: 200,
                })
                .is_err()
            {
                return;
            }
        }
    });
    (addr, rx)
}

#[test]
fn events_go_over_tls_to_a_receiver_signed_by_the_configured_ca() {
    let files = tempfile::tempdir().unwrap();
    let ca = pki::Ca::new("hooks CA");
    let ca_file = ca.write(files.path(), "ca.pem");
    let (addr, rx) = tls_receiver(files.path(), &ca);
    let config = hook(
        files.path(),
        "secure",
        &format!("https://{addr}/events"),
        &format!("ca_file = \"{}\"", ca_file.display()),
    );
    let mut d = Daemon::start(&config);
    let mut gw = Gw::open(&d, "pgw.localdomain");
    use_up(&mut gw, "15551008400", "pgw.localdomain;tls;1");
    let mut all = Vec::new();
    let got = taken(&rx, 2, &mut all);
    assert_eq!(got[0]["path"], "acme/iot/15551008400");
    assert_eq!(
        all[0].header("X-Ocfd-Signature"),
        Some(format!("sha256={}", hex_hmac(&all[0].body)).as_str())
    );
    assert!(d.terminate().success());
}

#[test]
fn events_older_than_max_age_are_given_up_and_counted() {
    let files = tempfile::tempdir().unwrap();
    // Nothing listens there: every try fails.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let config = hook(
        files.path(),
        "dead",
        &format!("http://{addr}/"),
        "max_age_s = 1",
    );
    let mut d = Daemon::start(&config);
    let mut gw = Gw::open(&d, "pgw.localdomain");
    use_up(&mut gw, "15551008500", "pgw.localdomain;dead;1");
    let api = d.admin();
    wait_metric(&api, "ocfd_webhook_given_up_total{webhook=\"dead\"}", 2.0);
    assert!(
        metric(&api, "ocfd_webhook_failures_total{webhook=\"dead\"}").is_some_and(|f| f >= 1.0)
    );
    // Answers never waited for it.
    d.assert_serving();
    assert!(d.terminate().success());
}

#[test]
fn bad_webhook_settings_stop_the_start_with_status_64() {
    let files = tempfile::tempdir().unwrap();
    let secret = files.path().join("s.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let short = files.path().join("short.secret");
    std::fs::write(&short, "tiny\n").unwrap();
    let ca = files.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let entry = |name: &str, url: &str, secret: &std::path::Path, extra: &str| {
        format!(
            "[[webhooks]]\nname = \"{name}\"\nurl = \"{url}\"\nsecret_file = \"{}\"\n{extra}\n",
            secret.display()
        )
    };
    for (bad, says) in [
        (entry("a", "ftp://h/", &secret, ""), "webhooks.url"),
        (entry("a", "https://h/", &secret, ""), "webhooks.ca_file"),
        (entry("a b", "http://h/", &secret, ""), "webhooks.name"),
        (
            entry("a", "http://h/", &secret, "") + &entry("a", "http://h/", &secret, ""),
            "webhooks.name",
        ),
        (
            entry("a", "http://h/", &files.path().join("missing"), ""),
            "missing",
        ),
        (entry("a", "http://h/", &short, ""), "at least 16"),
        (
            entry(
                "a",
                "https://h/",
                &secret,
                &format!("ca_file = \"{}\"", ca.display()),
            ),
            "no certificate",
        ),
        (
            entry("a", "http://h/", &secret, "retry_initial_ms = 0"),
            "retry_initial_ms",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("ocfd.toml");
        std::fs::write(
            &cfg,
            format!(
                "state_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[diameter]\nlisten_tcp = [\"127.0.0.1:0\"]\n{bad}",
                dir.path().join("state").display()
            ),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ocfd"))
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(64), "{bad}: {said}");
        assert!(said.contains(says), "{bad}: {said}");
        assert!(!said.contains("listening"), "{said}");
    }
}
