//! The systemd notify protocol, driven through a NOTIFY_SOCKET of the test's own: the order
//! of EXTEND_TIMEOUT_USEC, READY=1, STATUS=, WATCHDOG=1 and STOPPING=1, and what they say.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Instant;

use common::*;

/// Reads notifications until `done` says so or the time is up; returns them all.
fn collect(sock: &UnixDatagram, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "notifications so far: {seen:?}");
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => seen.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) => panic!("{e}; notifications so far: {seen:?}"),
        }
    }
    seen
}

#[test]
fn ready_status_watchdog_and_stopping_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let state = tempfile::tempdir().unwrap();
    // WatchdogSec=1: a ping at least every half second.
    let mut d = Daemon::start_in_env(
        state,
        "",
        &[],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let seen = collect(&sock, |s| {
        s.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2
            && s.iter().filter(|m| m.contains("STATUS=peers")).count() >= 2
    });
    // Recovery announces itself before readiness; readiness comes before anything periodic.
    let ready = seen.iter().position(|m| m.contains("READY=1")).unwrap();
    let extend = seen
        .iter()
        .position(|m| m.contains("EXTEND_TIMEOUT_USEC="))
        .unwrap();
    assert!(extend < ready, "{seen:?}");
    assert_eq!(ready, 1, "{seen:?}");
    assert!(
        seen[ready].contains("STATUS=peers 0, sessions 0"),
        "{seen:?}"
    );
    let first_ping = seen.iter().position(|m| m.contains("WATCHDOG=1")).unwrap();
    assert!(first_ping > ready, "{seen:?}");

    // A peer shows in the status.
    let mut conn = Conn::connect(d.addr);
    assert_eq!(result_code(&conn.handshake("pgw.localdomain")), 2001);
    collect(&sock, |s| s.iter().any(|m| m.contains("STATUS=peers 1,")));

    d.proc.signal("TERM");
    let rest = collect(&sock, |s| s.iter().any(|m| m.contains("STOPPING=1")));
    let stopping = rest.last().unwrap();
    assert!(
        stopping.contains("STATUS=stopping: DPR to 1 peers"),
        "{rest:?}"
    );
    assert!(d.proc.wait_exit(WAIT).success());
    // Nothing after STOPPING=1 but, at most, nothing: no ping from a stopping server.
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        let m = String::from_utf8_lossy(&buf[..n]);
        assert!(!m.contains("WATCHDOG=1") && !m.contains("READY=1"), "{m}");
    }
}

/// The shipped unit passes `systemd-analyze verify` (with ExecStart pointed at the binary
/// under test, since verify checks that it exists), and keeps its hardening.
#[test]
fn the_unit_file_verifies_and_is_hardened() {
    require_tool("systemd-analyze", "systemd");
    let unit = include_str!("../systemd/ocfd.service");
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=",
        "User=ocfd",
        "StateDirectory=ocfd",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "LimitNOFILE=",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit.contains(line), "the unit lacks {line:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ocfd.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/ocfd", env!("CARGO_BIN_EXE_ocfd")),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        !said.contains("ocfd.service"),
        "verify has something to say about the unit: {said}"
    );
}
