//! Reload on SIGHUP: provisioning, peer settings and dictionaries change while a gateway stays
//! connected with a session open; a bad configuration, provisioning file or dictionary is
//! refused and the running one stays; systemd hears RELOADING=1 then READY=1.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Instant;

use common::*;
use ocf_loadtest::gy::{CcrSpec, INITIAL, MsccSpec, UPDATE};

const GLOBEX: &str = r#"
[[tenant]]
name = "globex"
[[tenant.node]]
path = "globex"
limits = [{ unit = "octets", amount = "1 GiB" }]
[[tenant.node]]
path = "globex/phone1"
msisdn = "447700900001"
"#;

const PHONE2: &str = "[[tenant.node]]\npath = \"globex/phone2\"\nmsisdn = \"447700900002\"\n";

fn rsu() -> MsccSpec {
    MsccSpec {
        rating_group: Some(1),
        requested_octets: Some(None),
        ..Default::default()
    }
}

/// Reads notifications until one contains `want`; returns them all.
fn until(sock: &UnixDatagram, want: &str) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.iter().any(|m: &String| m.contains(want)) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {want} in {seen:?}");
        sock.set_read_timeout(Some(left)).unwrap();
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("{e}: {seen:?}"));
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    seen
}

/// SIGHUP, then RELOADING=1 and READY=1 in that order; returns the STATUS of the READY.
fn reload(d: &mut Daemon, sock: &UnixDatagram) -> String {
    d.proc.signal("HUP");
    let seen = until(sock, "READY=1");
    let reloading = seen.iter().position(|m| m.contains("RELOADING=1"));
    let ready = seen.iter().position(|m| m.contains("READY=1"));
    assert!(reloading.is_some() && reloading < ready, "{seen:?}");
    seen[ready.unwrap()].clone()
}

#[test]
fn sighup_reloads_without_dropping_a_connection_or_a_session() {
    let files = tempfile::tempdir().unwrap();
    let tenants = files.path().join("tenants.toml");
    std::fs::write(&tenants, GLOBEX).unwrap();
    let sock_path = files.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let mut d = Daemon::start_in_env(
        tempfile::tempdir().unwrap(),
        &format!(
            "allowed_peers = []\n[charging]\ntenant_files = [\"{}\"]\n",
            tenants.display()
        ),
        &[],
        &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
    );
    until(&sock, "READY=1");
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let open = gw.ask(
        &CcrSpec::new("s;1", INITIAL, 0)
            .msisdn("447700900001")
            .mscc(rsu()),
    );
    assert_eq!(open.result_code, 2001);
    let phone2 = |n: u32| {
        CcrSpec::new(format!("p2;{n}"), INITIAL, 0)
            .msisdn("447700900002")
            .mscc(rsu())
    };
    assert_eq!(gw.ask(&phone2(1)).result_code, 5030);

    // A device added to the file serves after the reload, on the same connection, and the
    // session opened before goes on.
    std::fs::write(&tenants, format!("{GLOBEX}{PHONE2}")).unwrap();
    let status = reload(&mut d, &sock);
    assert!(status.contains("STATUS=reloaded"), "{status}");
    d.wait_log("nodes_added=1");
    assert_eq!(gw.ask(&phone2(2)).result_code, 2001);
    let update = CcrSpec::new("s;1", UPDATE, 1)
        .msisdn("447700900001")
        .mscc(rsu());
    assert_eq!(gw.ask(&update).result_code, 2001);

    // Refused, each: the running configuration stays and the gateway never notices.
    let cfg_path = d.config_path();
    let good = std::fs::read_to_string(&cfg_path).unwrap();
    let broken_dict = files.path().join("dict");
    std::fs::create_dir(&broken_dict).unwrap();
    std::fs::write(broken_dict.join("x.xml"), "<dictionary><avp").unwrap();
    let bad_configs = [
        (format!("{good}\nbogus_key = 1\n"), "unknown field"),
        (
            good.replace(
                "allowed_peers = []",
                &format!("dictionary_dir = \"{}\"", broken_dict.display()),
            ),
            "x.xml",
        ),
    ];
    for (n, (text, why)) in bad_configs.iter().enumerate() {
        std::fs::write(&cfg_path, text).unwrap();
        let status = reload(&mut d, &sock);
        assert!(status.contains("reload refused"), "{status}");
        d.proc.wait_count("reload refused", n + 1, WAIT);
        // The reason is on the same line (one event per line); wait for it all the same.
        let line = d.proc.wait_for(why, WAIT);
        assert!(line.contains("reload refused"), "{line}");
    }
    std::fs::write(&cfg_path, &good).unwrap();
    std::fs::write(&tenants, "[[tenant]]\nname = ").unwrap();
    let status = reload(&mut d, &sock);
    assert!(status.contains("reload refused"), "{status}");
    assert_eq!(gw.ask(&phone2(3)).result_code, 2001, "phone2 stays");
    let update = CcrSpec::new("s;1", UPDATE, 2)
        .msisdn("447700900001")
        .mscc(rsu());
    assert_eq!(gw.ask(&update).result_code, 2001);

    // Peer settings apply to connections from now on; the open one stays.
    std::fs::write(&tenants, format!("{GLOBEX}{PHONE2}")).unwrap();
    std::fs::write(
        &cfg_path,
        good.replace(
            "allowed_peers = []",
            "allowed_peers = [\"pgw.localdomain\"]",
        ),
    )
    .unwrap();
    assert!(reload(&mut d, &sock).contains("STATUS=reloaded"));
    let mut other = Conn::connect(d.addr);
    assert_eq!(result_code(&other.handshake("sgw.localdomain")), 3010);
    assert_eq!(
        gw.ask(
            &CcrSpec::new("s;1", UPDATE, 3)
                .msisdn("447700900001")
                .mscc(rsu())
        )
        .result_code,
        2001
    );
    // A setting only a restart changes is kept, and said so.
    std::fs::write(
        &cfg_path,
        good.replace("127.0.0.1:0", "127.0.0.1:1").replace(
            "allowed_peers = []",
            "allowed_peers = [\"pgw.localdomain\"]",
        ),
    )
    .unwrap();
    assert!(reload(&mut d, &sock).contains("STATUS=reloaded"));
    d.wait_log("setting=\"diameter.listen_tcp\"");
    assert!(d.terminate().success());
    assert!(!d.proc.output().contains("panicked"));
}
