//! Interop with freeDiameter's daemon (Debian `freediameterd`, dictionaries nasreq, dcca and
//! dcca_3gpp loaded), a Diameter stack nobody here wrote: it connects to ocfd, reaches the open
//! state, watchdogs are answered in both directions, and both ways of disconnecting are clean.
//!
//! RFC 3539 resets the watchdog timer on any received message, so with equal Tw the two sides
//! race. Each test gives one side the short Tw (6 s, the minimum) so that side's DWRs come
//! deterministically.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const FD_LIB: &str = "/usr/lib/freeDiameter";

/// Writes a freeDiameter configuration that connects to ocfd at `port` over TCP.
fn fd_config(dir: &Path, ocfd_port: u16, tw_s: u32) -> std::path::PathBuf {
    let conf = dir.join("fd.conf");
    let text = format!(
        r#"Identity = "fd.localdomain";
Realm = "localdomain";
Port = {fd_port};
SecPort = 0;
No_SCTP;
No_IPv6;
TwTimer = {tw_s};
TcTimer = 30;
LoadExtension = "{FD_LIB}/dict_nasreq.fdx";
LoadExtension = "{FD_LIB}/dict_dcca.fdx";
LoadExtension = "{FD_LIB}/dict_dcca_3gpp.fdx";
ConnectPeer = "ocfd.localdomain" {{ ConnectTo = "127.0.0.1"; Port = {ocfd_port}; No_TLS; No_SCTP; }};
"#,
        fd_port = free_port(),
    );
    std::fs::write(&conf, text).unwrap();
    conf
}

fn start_fd(dir: &Path, ocfd_port: u16, tw_s: u32) -> Watched {
    require_tool("freeDiameterd", "freediameterd freediameter-extensions");
    assert!(
        Path::new(FD_LIB).join("dict_dcca_3gpp.fdx").exists(),
        "apt-get install freediameter-extensions"
    );
    let conf = fd_config(dir, ocfd_port, tw_s);
    let mut cmd = Command::new("freeDiameterd");
    // -dd: debug output, which includes every message sent and received.
    cmd.arg("-c").arg(conf).arg("-dd");
    Watched::spawn("freeDiameterd", cmd)
}

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn ocfd_watchdogs_reach_freediameter_and_shutdown_disconnects_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut ocfd = Daemon::start("watchdog_s = 6");
    let mut fd = start_fd(dir.path(), ocfd.addr.port(), 30);
    fd.wait_for(
        "'STATE_WAITCEA'\t-> 'STATE_OPEN'\t'ocfd.localdomain'",
        LIMIT,
    );
    ocfd.wait_log("peer open");
    // ocfd's DWR (flags R---) arrives and freeDiameter answers it.
    fd.wait_for("RCV from 'ocfd.localdomain': (no model)0/280 f:R---", LIMIT);
    fd.wait_for(
        "SENT to 'ocfd.localdomain': 'Device-Watchdog-Answer'",
        LIMIT,
    );
    // SIGTERM: ocfd sends DPR, freeDiameter answers DPA, ocfd exits 0.
    ocfd.proc.signal("TERM");
    fd.wait_for("RCV from 'ocfd.localdomain': (no model)0/282 f:R---", LIMIT);
    fd.wait_for(
        "SENT to 'ocfd.localdomain': 'Disconnect-Peer-Answer'",
        LIMIT,
    );
    let status = ocfd.proc.wait_exit(LIMIT);
    assert!(status.success(), "{status:?}\n{}", ocfd.proc.output());
    assert!(
        ocfd.proc.output().contains("reason=Disconnected"),
        "{}",
        ocfd.proc.output()
    );
    assert!(
        !ocfd.proc.output().contains("ERROR"),
        "{}",
        ocfd.proc.output()
    );
}

#[test]
fn freediameter_watchdogs_are_answered_and_its_dpr_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let mut ocfd = Daemon::start("watchdog_s = 30");
    let mut fd = start_fd(dir.path(), ocfd.addr.port(), 6);
    fd.wait_for(
        "'STATE_WAITCEA'\t-> 'STATE_OPEN'\t'ocfd.localdomain'",
        LIMIT,
    );
    // The CEA freeDiameter parsed: our capabilities as it understood them.
    let cea = fd.wait_for("Capabilities-Exchange-Answer(257)", LIMIT);
    assert!(cea.contains("'DIAMETER_SUCCESS' (2001"), "{cea}");
    assert!(cea.contains("Auth-Application-Id(258)[-M]=4"), "{cea}");
    assert!(cea.contains("Supported-Vendor-Id(265)[-M]=10415"), "{cea}");
    fd.wait_for(
        "SENT to 'ocfd.localdomain': 'Device-Watchdog-Request'",
        LIMIT,
    );
    // The DWA (flags ----) comes back; twice, to see the timer re-armed on both sides.
    fd.wait_count(
        "RCV from 'ocfd.localdomain': (no model)0/280 f:----",
        2,
        LIMIT,
    );
    // freeDiameter shutting down sends DPR; ocfd answers and reports the peer's cause.
    fd.signal("TERM");
    fd.wait_for("RCV from 'ocfd.localdomain': (no model)0/282 f:----", LIMIT);
    ocfd.wait_log("reason=PeerDisconnected(");
    let status = fd.wait_exit(LIMIT);
    assert!(status.success(), "freeDiameterd exit {status:?}");
    ocfd.assert_serving();
}
