//! Wireshark's Diameter dissector (tshark) reads every byte ocfd sends in a captured exchange:
//! CER/CEA, DWR/DWA, a CCR/CCA with a Multiple-Services-Credit-Control grant and
//! Final-Unit-Indication, an
//! E-bit protocol error, the DPR/DPA of a shutdown, and RAR/RAA and ASR/ASA. The
//! capture must show every message
//! and no malformed packet or expert warning/error.

mod common;

use std::process::Command;
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use ocf_protocol::codes::avp as c;
use ocf_protocol::{Header, MessageWriter};

fn ccr(realm: &str, hop: u32) -> BytesMut {
    let mut b = BytesMut::new();
    let mut w = MessageWriter::new(&mut b, &Header::request(272, 4, hop, hop));
    w.utf8(c::SESSION_ID, "gw.localdomain;1;1");
    w.identity(c::ORIGIN_HOST, "gw.localdomain");
    w.identity(c::ORIGIN_REALM, "localdomain");
    w.identity(c::DESTINATION_REALM, realm);
    w.u32(c::AUTH_APPLICATION_ID, 4);
    w.utf8(c::SERVICE_CONTEXT_ID, "32251@3gpp.org");
    w.u32(c::CC_REQUEST_TYPE, 1);
    w.u32(c::CC_REQUEST_NUMBER, 0);
    let g = w.begin_group(c::SUBSCRIPTION_ID);
    w.u32(c::SUBSCRIPTION_ID_TYPE, 0);
    w.utf8(c::SUBSCRIPTION_ID_DATA, "15551000000");
    w.end_group(g);
    w.finish();
    b
}

fn tshark_read(file: &std::path::Path, port: u16, args: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-d", &format!("tcp.port=={port},diameter")])
        .args(args)
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Starts tshark capturing `ocfd`'s port into `file` and waits until the capture is live.
fn capture(ocfd: &Daemon, file: &std::path::Path) -> Watched {
    let port = ocfd.addr.port();
    let mut cmd = Command::new("tshark");
    cmd.args([
        "-i",
        "lo",
        "-f",
        &format!("tcp port {port}"),
        "-d",
        &format!("tcp.port=={port},diameter"),
    ])
    .args(["-a", "duration:120", "-l", "-P", "-w"])
    .arg(file);
    let mut tshark = Watched::spawn("tshark", cmd);
    tshark.wait_for("Capturing on", WAIT);
    // "Capturing on" comes before the capture is live: knock on the port (a bare TCP connect,
    // no Diameter) until tshark shows it has seen one.
    let live = (0..40).any(|_| {
        drop(std::net::TcpStream::connect(ocfd.addr));
        tshark.saw_within("[SYN]", Duration::from_millis(500))
    });
    assert!(live, "tshark never showed a packet:\n{}", tshark.output());
    tshark
}

/// What tshark finds malformed or warns about in `file`.
fn problems(file: &std::path::Path, port: u16) -> String {
    tshark_read(
        file,
        port,
        // TCP's own warnings ("ACKed segment that wasn't captured", a D-SACK for a segment
        // the kernel resent) say what the capture or the loopback did on a busy machine, not
        // what is wrong with our bytes.
        &[
            "-Y",
            "_ws.malformed || (_ws.expert.severity >= 0x00600000 && !tcp.analysis.flags && !tcp.options.sack.dsack)",
        ],
    )
}

/// Stops ocfd (its DPR answered with a DPA from gw.localdomain), then the capture once
/// tshark has seen the DPA, and checks that tshark found nothing malformed or suspect.
fn stop_and_check(
    ocfd: &mut Daemon,
    conn: &mut Conn,
    tshark: &mut Watched,
    file: &std::path::Path,
) {
    ocfd.proc.signal("TERM");
    let dpr = conn.expect_frame();
    assert_eq!(dpr.header.command_code, 282);
    let mut dpa = BytesMut::new();
    identity("gw.localdomain").write_dpa(&mut dpa, &dpr.header);
    conn.send(&dpa);
    conn.expect_closed();
    assert!(ocfd.proc.wait_exit(WAIT).success());
    // The live summary shows the last message once tshark has it; then stop the capture.
    tshark.wait_for("Disconnect-Peer Answer(282)", WAIT);
    tshark.signal("INT");
    tshark.wait_exit(WAIT);
    let problems = problems(file, ocfd.addr.port());
    assert!(
        problems.trim().is_empty(),
        "tshark found problems:\n{problems}"
    );
}

#[test]
fn tshark_dissects_our_bytes_without_complaint() {
    require_tool("tshark", "tshark");
    let mut ocfd = Daemon::start("");
    let port = ocfd.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("exchange.pcapng");
    let mut tshark = capture(&ocfd, &file);

    let mut conn = Conn::connect(ocfd.addr);
    assert_eq!(result_code(&conn.handshake("gw.localdomain")), 2001);
    let id = identity("gw.localdomain");
    let mut dwr = BytesMut::new();
    id.write_dwr(&mut dwr, 2, 2);
    conn.send(&dwr);
    assert_eq!(result_code(&conn.expect_frame()), 2001);
    // A Gy CCR with an MSCC: the answer carries GSU, Validity-Time, FUI and the 3GPP
    // Volume-Quota-Threshold. (The RSU names an amount: Wireshark warns on an empty one,
    // which RFC 4006 allows.)
    let mut gy = BytesMut::new();
    ocf_loadtest::gy::CcrSpec::new("gw.localdomain;gy;1", ocf_loadtest::gy::INITIAL, 0)
        .msisdn("15551008000")
        .mscc(ocf_loadtest::gy::MsccSpec {
            rating_group: Some(1),
            requested_octets: Some(Some(20 << 20)),
            ..Default::default()
        })
        .write(&mut gy, 3, 3);
    conn.send(&gy);
    let cca = ocf_loadtest::gy::CcaResult::read(&conn.expect_frame());
    assert_eq!(
        (cca.result_code, cca.mscc[0].final_unit_action),
        (2001, Some(0))
    );
    conn.send(&ccr("elsewhere.example", 4));
    let realm = conn.expect_frame();
    assert_eq!(result_code(&realm), 3003);
    assert!(realm.find(c::FAILED_AVP).is_some());

    stop_and_check(&mut ocfd, &mut conn, &mut tshark, &file);
    let messages = tshark_read(
        &file,
        port,
        &[
            "-Y",
            "diameter",
            "-T",
            "fields",
            "-e",
            "diameter.cmd.code",
            "-e",
            "diameter.flags.request",
            "-e",
            "diameter.Result-Code",
        ],
    );
    let seen: Vec<Vec<&str>> = messages.lines().map(|l| l.split('\t').collect()).collect();
    let want: Vec<Vec<&str>> = vec![
        vec!["257", "1", ""],
        vec!["257", "0", "2001"],
        vec!["280", "1", ""],
        vec!["280", "0", "2001"],
        vec!["272", "1", ""],
        // Command-level and MSCC-level Result-Code.
        vec!["272", "0", "2001,2001"],
        vec!["272", "1", ""],
        vec!["272", "0", "3003"],
        vec!["282", "1", ""],
        vec!["282", "0", "2001"],
    ];
    let norm = |v: &Vec<&str>| {
        v.iter()
            .map(|f| {
                if *f == "True" {
                    "1"
                } else if *f == "False" {
                    "0"
                } else {
                    f
                }
            })
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        seen.iter().map(norm).collect::<Vec<_>>(),
        want.iter().map(norm).collect::<Vec<_>>(),
        "{messages}"
    );
    // Every AVP was known to the dissector.
    let avps = tshark_read(&file, port, &["-Y", "diameter", "-V"]);
    assert!(!avps.contains("Unknown AVP"), "{avps}");
}

/// A DOIC overload report (RFC 7683 OC-Supported-Features and OC-OLR) in ocfd's answers,
/// including its 3004s, dissects cleanly, with the reduction tshark reads equal to ocfd's.
#[test]
fn tshark_dissects_a_doic_overload_report() {
    require_tool("tshark", "tshark");
    // A budget of 1 µs: within a read, everything past the first few requests is shed.
    let mut ocfd = Daemon::start("overload_queue_us = 1");
    let port = ocfd.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doic.pcapng");
    let mut tshark = capture(&ocfd, &file);
    let mut conn = Conn::connect(ocfd.addr);
    assert_eq!(result_code(&conn.handshake("gw.localdomain")), 2001);
    let features = ocf_protocol::doic::encode(ocf_protocol::doic::OLR_DEFAULT_ALGO, None);
    let mut report = None;
    for round in 0..10u32 {
        let mut burst = BytesMut::new();
        for k in 0..100u32 {
            let start = burst.len();
            ocf_loadtest::gy::CcrSpec::new(
                format!("gw.localdomain;doic;{round};{k}"),
                ocf_loadtest::gy::INITIAL,
                0,
            )
            .msisdn(&(15551000000u64 + u64::from(k)).to_string())
            .mscc(ocf_loadtest::gy::MsccSpec {
                rating_group: Some(1),
                requested_octets: Some(Some(1000)),
                ..Default::default()
            })
            .write(&mut burst, round * 100 + k + 10, round * 100 + k + 10);
            assert!(ocf_protocol::doic::append(&mut burst, start, &features));
        }
        conn.send(&burst);
        for _ in 0..100 {
            let m = conn.expect_frame();
            report = report.or(ocf_protocol::doic::olr(m.avps()));
        }
        if report.is_some() {
            break;
        }
        let ticks = ocfd.proc.output().matches("supervision tick").count();
        ocfd.proc.wait_count("supervision tick", ticks + 1, WAIT);
    }
    let report = report.expect("an OC-OLR while requests were shed");
    stop_and_check(&mut ocfd, &mut conn, &mut tshark, &file);
    let fields = tshark_read(
        &file,
        port,
        &[
            "-Y",
            "diameter.OC-OLR",
            // Many answers share a packet: the first of each field per packet.
            "-E",
            "occurrence=f",
            "-T",
            "fields",
            "-e",
            "diameter.OC-Sequence-Number",
            "-e",
            "diameter.OC-Report-Type",
            "-e",
            "diameter.OC-Reduction-Percentage",
            "-e",
            "diameter.OC-Validity-Duration",
            "-e",
            "diameter.OC-Feature-Vector",
        ],
    );
    let want = format!(
        "{}\t{}\t{}\t{}\t{}",
        report.sequence,
        report.report_type,
        report.reduction,
        report.validity_s,
        ocf_protocol::doic::OLR_DEFAULT_ALGO
    );
    assert!(
        fields.lines().any(|l| l == want),
        "want a message with {want:?}; tshark read:\n{fields}"
    );
    let avps = tshark_read(&file, port, &["-Y", "diameter", "-V"]);
    assert!(!avps.contains("Unknown AVP"), "{avps}");
}

/// The Re-Auth-Request ocfd sends when a manager asks, the Abort-Session-Request when a manager
/// blocks a device, and the gateway's answers dissect cleanly; tshark reads the session and
/// the destination ocfd named.
#[test]
fn tshark_dissects_re_auth_and_abort_session_requests() {
    require_tool("tshark", "tshark");
    let mut ocfd = Daemon::start("");
    let port = ocfd.addr.port();
    let api = ocfd.admin();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("asr.pcapng");
    let mut tshark = capture(&ocfd, &file);
    let mut conn = Conn::connect(ocfd.addr);
    // The CCRs name pgw.localdomain as their Origin-Host: the ASR goes to that peer.
    assert_eq!(result_code(&conn.handshake("pgw.localdomain")), 2001);
    let sid = "pgw.localdomain;asr;1";
    let mut gy = BytesMut::new();
    ocf_loadtest::gy::CcrSpec::new(sid, ocf_loadtest::gy::INITIAL, 0)
        .msisdn("15551008900")
        .mscc(ocf_loadtest::gy::MsccSpec::ask(1, 1 << 20))
        .write(&mut gy, 3, 3);
    conn.send(&gy);
    assert_eq!(result_code(&conn.expect_frame()), 2001);
    // A manager's re-authorisation first: RAR, answered RAA.
    let (status, _) = api.call("POST", "/v1/reauth/acme/iot/15551008900", None);
    assert_eq!(status, 202);
    let rar = conn.expect_frame();
    assert_eq!(rar.header.command_code, 258);
    conn.send(&answer_of(&rar, "pgw.localdomain", 2001));
    let (status, _) = api.call("PUT", "/v1/blocked/acme/iot/15551008900", None);
    assert_eq!(status, 200);
    let asr = conn.expect_frame();
    assert_eq!(asr.header.command_code, 274);
    conn.send(&answer_of(&asr, "pgw.localdomain", 2001));
    // The gateway's CCR-T after the abort.
    let mut t = BytesMut::new();
    ocf_loadtest::gy::CcrSpec::new(sid, ocf_loadtest::gy::TERMINATION, 1)
        .mscc(ocf_loadtest::gy::MsccSpec::report(1, 1000, false))
        .write(&mut t, 4, 4);
    conn.send(&t);
    assert_eq!(result_code(&conn.expect_frame()), 2001);
    stop_and_check(&mut ocfd, &mut conn, &mut tshark, &file);
    let rar_fields = tshark_read(
        &file,
        port,
        &[
            "-Y",
            "diameter.cmd.code == 258",
            "-T",
            "fields",
            "-e",
            "diameter.Session-Id",
            "-e",
            "diameter.Re-Auth-Request-Type",
            "-e",
            "diameter.Result-Code",
        ],
    );
    let rar_lines: Vec<&str> = rar_fields.lines().collect();
    assert_eq!(rar_lines.len(), 2, "RAR and RAA: {rar_fields}");
    assert!(rar_lines[0].starts_with(sid), "{rar_fields}");
    assert!(rar_lines[1].ends_with("2001"), "{rar_fields}");
    let fields = tshark_read(
        &file,
        port,
        &[
            "-Y",
            "diameter.cmd.code == 274",
            "-T",
            "fields",
            "-e",
            "diameter.flags.request",
            "-e",
            "diameter.Session-Id",
            "-e",
            "diameter.Destination-Host",
            "-e",
            "diameter.Auth-Application-Id",
            "-e",
            "diameter.Result-Code",
        ],
    );
    let lines: Vec<&str> = fields.lines().collect();
    assert_eq!(lines.len(), 2, "ASR and ASA: {fields}");
    assert!(
        lines[0].contains(sid) && lines[0].contains("pgw.localdomain") && lines[0].contains('4'),
        "{fields}"
    );
    assert!(lines[1].ends_with("2001"), "{fields}");
    let avps = tshark_read(&file, port, &["-Y", "diameter", "-V"]);
    assert!(!avps.contains("Unknown AVP"), "{avps}");
}

/// Sy: a PCRF's Spending-Limit request and ocfd's answer, ocfd's Spending-Status-Notification
/// when a counter changes, and the PCRF's answer dissect cleanly, with the counter and status
/// tshark reads being ocfd's.
#[test]
fn tshark_dissects_sy_spending_limit_and_status_notification() {
    require_tool("tshark", "tshark");
    const SY: u32 = 16777302;
    let mut ocfd = Daemon::start("");
    let port = ocfd.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sy.pcapng");
    let mut tshark = capture(&ocfd, &file);
    let mut conn = Conn::connect(ocfd.addr);
    // One peer for both: the gateway and the PCRF (Gy and Sy).
    let mut id = identity("pgw.localdomain");
    id.auth_application_ids = vec![4, SY];
    let mut cer = BytesMut::new();
    id.write_cer(&mut cer, 1, 1);
    conn.send(&cer);
    assert_eq!(result_code(&conn.expect_frame()), 2001);
    let sid = "pgw.localdomain;sy;1";
    let mut slr = BytesMut::new();
    let mut w = MessageWriter::new(&mut slr, &Header::request(8388635, SY, 2, 2));
    w.utf8(c::SESSION_ID, sid);
    w.u32(c::AUTH_APPLICATION_ID, SY);
    w.identity(c::ORIGIN_HOST, "pgw.localdomain");
    w.identity(c::ORIGIN_REALM, "localdomain");
    w.identity(c::DESTINATION_REALM, "localdomain");
    w.u32(c::SL_REQUEST_TYPE, 0);
    let g = w.begin_group(c::SUBSCRIPTION_ID);
    w.u32(c::SUBSCRIPTION_ID_TYPE, 0);
    w.utf8(c::SUBSCRIPTION_ID_DATA, "15551009400");
    w.end_group(g);
    w.finish();
    conn.send(&slr);
    assert_eq!(result_code(&conn.expect_frame()), 2001);
    // Usage past 80% of the device's 10 MiB: the status changes, an SNR comes.
    let mut gy = BytesMut::new();
    ocf_loadtest::gy::CcrSpec::new("pgw.localdomain;gy;9", ocf_loadtest::gy::INITIAL, 0)
        .msisdn("15551009400")
        .mscc(ocf_loadtest::gy::MsccSpec::report(1, 9 << 20, false))
        .write(&mut gy, 3, 3);
    conn.send(&gy);
    let mut snr = conn.expect_frame();
    while snr.header.command_code != 8388636 {
        snr = conn.expect_frame();
    }
    conn.send(&answer_of(&snr, "pgw.localdomain", 2001));
    stop_and_check(&mut ocfd, &mut conn, &mut tshark, &file);
    let fields = tshark_read(
        &file,
        port,
        &[
            "-Y",
            "diameter.cmd.code == 8388635 || diameter.cmd.code == 8388636",
            "-T",
            "fields",
            "-e",
            "diameter.cmd.code",
            "-e",
            "diameter.flags.request",
            "-e",
            "diameter.Policy-Counter-Status",
        ],
    );
    let lines: Vec<&str> = fields.lines().collect();
    assert_eq!(lines.len(), 4, "SLR, SLA, SNR, SNA: {fields}");
    assert!(lines[1].contains("normal"), "{fields}");
    assert!(
        lines[2].starts_with("8388636") && lines[2].contains("warn-80"),
        "{fields}"
    );
    let avps = tshark_read(&file, port, &["-Y", "diameter", "-V"]);
    assert!(!avps.contains("Unknown AVP"), "{avps}");
}
