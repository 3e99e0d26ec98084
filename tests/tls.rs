//! Diameter over TLS/TCP (RFC 6733 §13) with certificates made for the test: a gateway with a
//! certificate from the configured CA and naming its Origin-Host is served; one naming another
//! host gets 3010; one from another CA, or without a certificate, never gets a CEA; TLS 1.2 and
//! 1.3 both work and min_version is kept; the load tool speaks TLS too (loadtest/tests/cli.rs).

mod common;

use std::sync::Arc;

use common::pki::Ca;
use common::*;
use ocf_loadtest::gy::{CcrSpec, INITIAL, MsccSpec};
use rustls::version::{TLS12, TLS13};

struct Pki {
    dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    good: pki::Files,
    other_host: pki::Files,
    rogue: pki::Files,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("operator peering CA");
    let rogue_ca = Ca::new("somebody else");
    ca.issue(dir.path(), "ocfd", &["ocfd.localdomain"]);
    Pki {
        ca: ca.write(dir.path(), "ca.pem"),
        good: ca.issue(dir.path(), "pgw", &["pgw.localdomain"]),
        other_host: ca.issue(dir.path(), "sgw", &["sgw.localdomain"]),
        rogue: rogue_ca.issue(dir.path(), "rogue", &["pgw.localdomain"]),
        dir,
    }
}

fn tls_toml(p: &Pki, min: &str) -> String {
    format!(
        "[diameter.tls]\nlisten = [\"127.0.0.1:0\"]\ncertificate = \"{}\"\nprivate_key = \"{}\"\npeer_ca = \"{}\"\nmin_version = \"{min}\"\n",
        p.dir.path().join("ocfd.pem").display(),
        p.dir.path().join("ocfd.key").display(),
        p.ca.display()
    )
}

fn client(
    p: &Pki,
    who: Option<&pki::Files>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    tls_client(&p.ca, who, versions)
}

fn tls_addr(d: &mut Daemon) -> std::net::SocketAddr {
    logged_addr(&d.wait_log("listening transport=\"tls\""))
}

/// The connection never carries a CEA: the handshake fails, or the server ends it.
fn refused(conn: std::io::Result<Conn>) {
    let Ok(mut c) = conn else { return };
    if std::io::Write::write_all(&mut c.s, &cer("pgw.localdomain")).is_err() {
        return;
    }
    match c.read(WAIT) {
        Read_::Closed => {}
        other => panic!("a CEA or a silence instead of a refusal: {other:?}"),
    }
}

#[test]
fn mutual_tls_serves_the_certified_peer_and_refuses_the_rest() {
    let p = pki();
    let mut d = Daemon::start(&tls_toml(&p, "1.2"));
    let addr = tls_addr(&mut d);

    for versions in [&[&TLS13][..], &[&TLS12][..]] {
        let mut conn = Conn::connect_tls(
            addr,
            client(&p, Some(&p.good), versions),
            "ocfd.localdomain",
        )
        .unwrap();
        assert_eq!(result_code(&conn.handshake("pgw.localdomain")), 2001);
        let mut gw = Gw::over(conn);
        let cca = gw.ask(
            &CcrSpec::new(format!("tls;{}", versions.len()), INITIAL, 0)
                .msisdn("15551000042")
                .mscc(MsccSpec {
                    rating_group: Some(1),
                    requested_octets: Some(None),
                    ..Default::default()
                }),
        );
        assert_eq!(cca.result_code, 2001);
    }

    // A certificate for another host: its CER for pgw is refused with 3010.
    let mut conn = Conn::connect_tls(
        addr,
        client(&p, Some(&p.other_host), &[&TLS13]),
        "ocfd.localdomain",
    )
    .unwrap();
    assert_eq!(result_code(&conn.handshake("pgw.localdomain")), 3010);
    // Another CA, or no certificate at all: no Diameter at all.
    refused(Conn::connect_tls(
        addr,
        client(&p, Some(&p.rogue), &[&TLS13]),
        "ocfd.localdomain",
    ));
    refused(Conn::connect_tls(
        addr,
        client(&p, None, &[&TLS13]),
        "ocfd.localdomain",
    ));
    // Plain Diameter on the TLS port is not TLS: closed without an answer.
    let mut plain = Conn::connect(addr);
    plain.send(&cer("pgw.localdomain"));
    plain.expect_closed();
    // Logged by ocfd when it closed the connection: wait for the line, not for a read of it.
    d.wait_log("TLS handshake failed");
    d.assert_serving();
    assert!(d.terminate().success());
}

#[test]
fn min_version_1_3_refuses_tls_1_2() {
    let p = pki();
    let mut d = Daemon::start(&tls_toml(&p, "1.3"));
    let addr = tls_addr(&mut d);
    refused(Conn::connect_tls(
        addr,
        client(&p, Some(&p.good), &[&TLS12]),
        "ocfd.localdomain",
    ));
    let mut conn = Conn::connect_tls(
        addr,
        client(&p, Some(&p.good), &[&TLS13]),
        "ocfd.localdomain",
    )
    .unwrap();
    assert_eq!(result_code(&conn.handshake("pgw.localdomain")), 2001);
}

#[test]
fn bad_tls_settings_stop_startup_with_64() {
    let p = pki();
    let state = tempfile::tempdir().unwrap();
    let cfg = state.path().join("ocfd.toml");
    for (toml, why) in [
        (
            tls_toml(&p, "1.2").replace("ocfd.key", "missing.key"),
            "missing.key",
        ),
        (
            tls_toml(&p, "1.2").replace("private_key", "#private_key"),
            "diameter.tls.private_key",
        ),
        (tls_toml(&p, "1.1"), "min_version"),
    ] {
        std::fs::write(
            &cfg,
            format!("[diameter]\nlisten_tcp = [\"127.0.0.1:0\"]\n{toml}"),
        )
        .unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ocfd"));
        cmd.arg("--config")
            .arg(&cfg)
            .arg("--state-dir")
            .arg(state.path().join("s"));
        let mut w = Watched::spawn("ocfd", cmd);
        assert_eq!(w.wait_exit(WAIT).code(), Some(64), "{}", w.output());
        assert!(w.output().contains(why), "{why}: {}", w.output());
    }
}
