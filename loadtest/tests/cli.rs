//! The ocf-loadtest binary end to end against an ocfd server running in this process on
//! 127.0.0.1 port 0.

use std::process::Command;

use ocf::config::Config;
use ocf::server::Server;

#[test]
fn reports_round_trips_against_ocfd() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = Config::default();
    cfg.diameter.listen_tcp = vec!["127.0.0.1:0".into()];
    cfg.admin.listen = Some("127.0.0.1:0".into());
    let state = tempfile::tempdir().unwrap();
    cfg.state_dir = state.path().to_path_buf();
    let server = rt.block_on(async { Server::bind(&cfg) }).unwrap();
    let addr = server.local_addrs()[0].1;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = rt.spawn(server.run(async {
        let _ = stopped.await;
    }));

    let out = Command::new(env!("CARGO_BIN_EXE_ocf-loadtest"))
        .args([
            "--server",
            &addr.to_string(),
            "--watchdogs",
            "200",
            "--timeout-s",
            "10",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("open: ocfd.localdomain (localdomain)"),
        "{stdout}"
    );
    assert!(stdout.contains("200 DWR/DWA in"), "{stdout}");
    assert!(stdout.contains("disconnected"), "{stdout}");

    // A server that is not there: a clear failure, not a hang.
    let out = Command::new(env!("CARGO_BIN_EXE_ocf-loadtest"))
        .args(["--server", "127.0.0.1:1", "--timeout-s", "5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ocf-loadtest:"));

    stop.send(()).unwrap();
    rt.block_on(running).unwrap();
}
