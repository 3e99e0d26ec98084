//! What ships for ops beside the binaries (packaging/): the Prometheus alerting rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`), and every metric the
//! rules and the Grafana dashboard name is one a live ocfd exports on /metrics (with TLS and a
//! webhook configured, after a credit-control request). The certificate gauge holds the
//! certificate's own notAfter.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::pki::Ca;
use common::*;
use ocf_loadtest::gy::{CcrSpec, INITIAL, MsccSpec};

const PACKAGING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging");

fn promtool(dir: &Path, args: &[&str]) {
    require_tool("promtool", "prometheus");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `ocfd_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("ocfd_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // Not the tail of a longer identifier.
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out
}

/// Every `expr` string in a Grafana dashboard, however deep.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn the_alerting_rules_pass_promtool_and_their_unit_tests() {
    let dir = Path::new(PACKAGING).join("prometheus");
    promtool(&dir, &["check", "rules", "ocfd-alerts.yml"]);
    promtool(&dir, &["test", "rules", "ocfd-alerts.test.yml"]);
}

#[test]
fn every_metric_the_rules_and_the_dashboard_name_is_exported() {
    // TLS (the certificate gauge) and a webhook (its counters) configured.
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new("peering CA");
    let ours = ca.issue(pki.path(), "ocfd", &["ocfd.localdomain"]);
    let ca_file = ca.write(pki.path(), "ca.pem");
    let secret = pki.path().join("hook.secret");
    std::fs::write(&secret, "a webhook secret of some length\n").unwrap();
    let toml = format!(
        "[diameter.tls]\nlisten = [\"127.0.0.1:0\"]\ncertificate = \"{}\"\nprivate_key = \"{}\"\npeer_ca = \"{}\"\n\
         [[webhooks]]\nname = \"ops\"\nurl = \"http://127.0.0.1:{}/\"\nsecret_file = \"{}\"\n",
        ours.cert.display(),
        ours.key.display(),
        ca_file.display(),
        free_port(),
        secret.display()
    );
    let mut d = Daemon::start(&toml);
    let api = d.admin();
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let i = gw.ask(
        &CcrSpec::new("pgw.localdomain;ops;1", INITIAL, 0)
            .msisdn("15551000001")
            .mscc(MsccSpec::ask(10, 1 << 20)),
    );
    assert_eq!(i.result_code, 2001);
    // The gauges are refreshed by the supervision pass: two passes after the request, every
    // gauge has been set since.
    d.wait_log("supervision tick");
    d.wait_log("supervision tick");
    let page = ocf::ctl::http::Client {
        addr: api.addr,
        token: None,
        timeout: WAIT,
    }
    .call("GET", "/metrics", None)
    .unwrap()
    .body;
    let exported: BTreeSet<String> = page
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    // A cluster node's metrics are not on this single node's page: they must be ones ocfd
    // describes (tests/cluster.rs reads them on a node's page).
    let cluster_metric = |name: &str| {
        name.starts_with("ocfd_cluster_")
            && include_str!("../src/server/admin/metrics.rs").contains(&format!("\"{name}\""))
    };
    let known = |name: &str| {
        exported.contains(name)
            || cluster_metric(name)
            || ["_bucket", "_sum", "_count"].iter().any(|s| {
                name.strip_suffix(s)
                    .is_some_and(|b| exported.contains(&format!("{b}_bucket")))
            })
            || exported.contains(&format!("{name}_bucket"))
    };

    let rules =
        std::fs::read_to_string(Path::new(PACKAGING).join("prometheus/ocfd-alerts.yml")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(PACKAGING).join("grafana/ocfd-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 20, "{} queries", queries.len());
    for (what, text) in [
        ("the alerting rules", rules.clone()),
        ("the dashboard", queries.join("\n")),
    ] {
        let named = metric_names(&text);
        assert!(named.len() >= 10, "{what} name {named:?}");
        let unknown: Vec<_> = named.iter().filter(|n| !known(n)).collect();
        assert!(
            unknown.is_empty(),
            "{what} name metrics ocfd does not export: {unknown:?}\n/metrics:\n{page}"
        );
    }

    // The certificate's expiry is its notAfter, as openssl would read it.
    let cert = ocf_transport::tls::certificates(&ours.cert).unwrap();
    let not_after = ocf_transport::expiry::not_after(&cert[0]).unwrap();
    let line = page
        .lines()
        .find(|l| {
            l.starts_with("ocfd_tls_certificate_expiry_timestamp_seconds{")
                && l.contains("ocfd.pem")
        })
        .unwrap_or_else(|| panic!("no expiry for ocfd.pem:\n{page}"));
    let shown: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(shown as i64, not_after, "{line}");
    assert!(
        not_after > ocf::server::clock::unix_now(),
        "a fresh certificate is valid"
    );
    d.terminate();
}
