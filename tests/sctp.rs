//! Diameter over SCTP. This kernel has no SCTP, so the association tests are `#[ignore]`d here
//! and run inside a qemu guest with Debian's stock kernel by `scripts/sctp-vm-test.sh` (which
//! `.ci/run` runs). The startup test runs everywhere and checks whichever case the kernel is.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use bytes::BytesMut;
use ocf::config::Config;
use ocf::server::Server;
use ocf_protocol::codes::avp as c;
use ocf_protocol::types::Address;
use ocf_protocol::{Message, frame};
use ocf_transport::sctp::{SctpStream, is_supported};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(20);

async fn read_message(s: &mut SctpStream, buf: &mut BytesMut) -> Message {
    loop {
        if let Ok(Some(len)) = frame::check(buf, 1 << 20) {
            if buf.len() >= len {
                return Message::decode(buf.split_to(len).freeze()).unwrap();
            }
        }
        let n = tokio::time::timeout(LIMIT, s.read_buf(buf))
            .await
            .expect("answer in time")
            .unwrap();
        assert!(n > 0, "association closed");
    }
}

#[test]
#[ignore = "needs a kernel with SCTP: run inside qemu by scripts/sctp-vm-test.sh"]
fn multihomed_capabilities_exchange_watchdog_and_disconnect() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut cfg = Config::default();
        cfg.diameter.listen_tcp = vec![];
        cfg.diameter.listen_sctp = vec!["127.0.0.1,127.0.0.2:0".into()];
        cfg.admin.listen = None;
        cfg.journal.enabled = false;
        cfg.journal.usage_records = false;
        let server = Server::bind(&cfg).expect("bind SCTP");
        let addrs: Vec<SocketAddr> = server.local_addrs().into_iter().map(|(_, a)| a).collect();
        assert_eq!(addrs.len(), 2, "{addrs:?}");
        assert_eq!(addrs[0].port(), addrs[1].port());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(server.run(async {
            let _ = stop_rx.await;
        }));

        // A multi-homed client too.
        let local: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()];
        let mut s = SctpStream::connect(addrs[0], &local)
            .await
            .expect("connect");
        let peer_addrs = s.peer_addrs().unwrap();
        for a in &addrs {
            assert!(
                peer_addrs.contains(a),
                "server advertised {peer_addrs:?}, expected {addrs:?}"
            );
        }

        let id = common::identity("gw.localdomain");
        let mut out = BytesMut::new();
        id.write_cer(&mut out, 1, 1);
        s.enable_rcvinfo().unwrap();
        s.write_all(&out).await.unwrap();
        // The CEA comes as one SCTP message with the Diameter payload protocol identifier.
        let mut first = vec![0u8; 65536];
        let (n, ppid) = tokio::time::timeout(LIMIT, s.recv_with_ppid(&mut first))
            .await
            .expect("CEA in time")
            .unwrap();
        assert_eq!(ppid, Some(46), "PPID of the CEA");
        let mut buf = BytesMut::from(&first[..n]);
        let cea = read_message(&mut s, &mut buf).await;
        assert_eq!(common::result_code(&cea), 2001);
        let ips: Vec<Address> = cea
            .find_all(c::HOST_IP_ADDRESS)
            .map(|a| a.address().unwrap())
            .collect();
        assert_eq!(
            ips,
            addrs
                .iter()
                .map(|a| Address::Ip(a.ip()))
                .collect::<Vec<_>>(),
            "CEA lists every local address"
        );

        out.clear();
        id.write_dwr(&mut out, 2, 2);
        s.write_all(&out).await.unwrap();
        let dwa = read_message(&mut s, &mut buf).await;
        assert_eq!(
            (dwa.header.command_code, common::result_code(&dwa)),
            (280, 2001)
        );

        // Shutdown: the server sends DPR over SCTP and finishes once we answer.
        stop_tx.send(()).unwrap();
        let dpr = read_message(&mut s, &mut buf).await;
        assert_eq!(
            (dpr.header.command_code, dpr.header.flags.is_request()),
            (282, true)
        );
        out.clear();
        id.write_dpa(&mut out, &dpr.header);
        s.write_all(&out).await.unwrap();
        tokio::time::timeout(LIMIT, running)
            .await
            .expect("server stops")
            .unwrap();
    });
}

#[test]
fn startup_with_sctp_configured_fails_clearly_without_kernel_support() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ocfd"));
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--listen-sctp",
        "127.0.0.1:0",
        "--state-dir",
    ])
    .arg(dir.path());
    let mut ocfd = common::Watched::spawn("ocfd", cmd);
    if is_supported() {
        ocfd.wait_for("listening transport=\"sctp\"", LIMIT);
    } else {
        let status = ocfd.wait_exit(LIMIT);
        assert!(!status.success());
        ocfd.wait_for("this kernel has no SCTP", LIMIT);
        assert!(
            !ocfd.output().contains("listening"),
            "no listener may be up: {}",
            ocfd.output()
        );
    }
}
