//! The library's entry point, driven in process without signals: `Server::serve` answers over
//! real TCP, takes a reload from its channel, and stops cleanly (snapshot written) when its
//! shutdown future completes; `serve` refuses a bad configuration with exit status 64 before
//! any port is bound.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Gw, WAIT};
use ocf::config::Config;
use ocf::server::{EXIT_CONFIG, LoadConfig, Server};
use ocf_loadtest::gy::{CcrSpec, INITIAL, MsccSpec, TERMINATION};

const GLOBEX: &str = "[[tenant]]\nname = \"globex\"\n[[tenant.node]]\npath = \"globex\"\nlimits = [{ unit = \"octets\", amount = \"1 GiB\" }]\n";
const PHONE: &str = "[[tenant.node]]\npath = \"globex/phone\"\nmsisdn = \"447700900001\"\n";

fn config(state: &std::path::Path, tenants: &std::path::Path) -> Config {
    let mut c = Config {
        state_dir: state.to_owned(),
        worker_threads: 1,
        ..Config::default()
    };
    c.diameter.listen_tcp = vec!["127.0.0.1:0".into()];
    c.admin.listen = Some("127.0.0.1:0".into());
    c.charging.tenant_files = vec![tenants.to_owned()];
    c
}

fn open(gw: &mut Gw, sid: &str, msisdn: &str) -> u32 {
    gw.ask(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(msisdn)
            .mscc(MsccSpec::rsu(1)),
    )
    .result_code
}

#[test]
fn serve_answers_reloads_from_its_channel_and_stops_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let (state, tenants) = (dir.path().join("state"), dir.path().join("tenants.toml"));
    std::fs::write(&tenants, GLOBEX).unwrap();
    let cfg = config(&state, &tenants);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(async { Server::bind(&cfg) }).unwrap();
    let addr: SocketAddr = server
        .local_addrs()
        .iter()
        .find(|(t, _)| *t == "tcp")
        .map(|(_, a)| *a)
        .expect("a TCP listener");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (reload, reloads) = tokio::sync::mpsc::unbounded_channel::<LoadConfig>();
    let serving = rt.spawn(server.serve(
        async {
            let _ = stopped.await;
        },
        reloads,
        None,
    ));

    let mut gw = Gw::open_at(addr, "pgw.localdomain");
    assert_eq!(
        open(&mut gw, "serve;1", "447700900001"),
        5030,
        "not provisioned yet"
    );
    assert_eq!(
        open(&mut gw, "serve;2", "15551000000"),
        2001,
        "the embedded tenant"
    );

    // A reload through the channel: the file now has the phone.
    std::fs::write(&tenants, format!("{GLOBEX}{PHONE}")).unwrap();
    let next = config(&state, &tenants);
    reload.send(Box::new(move || Ok(next))).unwrap();
    // Reloads are taken one at a time: when the next one is read, the first is done.
    let (read, was_read) = std::sync::mpsc::channel();
    reload
        .send(Box::new(move || {
            let _ = read.send(());
            Err("a probe: the reload before this one is done".into())
        }))
        .unwrap();
    was_read.recv_timeout(WAIT).expect("the reloads are read");
    assert_eq!(
        open(&mut gw, "serve;3", "447700900001"),
        2001,
        "after the reload"
    );
    let t = gw.ask(&CcrSpec::new("serve;3", TERMINATION, 1).msisdn("447700900001"));
    assert_eq!(t.result_code, 2001);

    // Told to stop: the peer gets DPR, serve returns, and a snapshot is left behind.
    stop.send(()).unwrap();
    let m = gw.conn.expect_frame();
    assert_eq!(m.header.command_code, 282, "DPR on shutdown");
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), serving).await })
        .expect("serve returns after its shutdown future completes")
        .unwrap();
    let snapshot = std::fs::read(state.join("snapshot")).expect("a snapshot at stop");
    let header = ocf_store::snapshot::header(&snapshot, &state.join("snapshot")).unwrap();
    assert!(
        header.info.changes >= 2,
        "the start and the reload's import"
    );
}

/// Why `serve` refuses to start with `cfg` (it must).
fn refused(cfg: &Config) -> ocf::server::ServerError {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_reload, reloads) = tokio::sync::mpsc::unbounded_channel::<LoadConfig>();
    rt.block_on(ocf::server::serve(
        cfg,
        std::future::pending(),
        reloads,
        None,
    ))
    .expect_err("serve refuses this configuration")
}

#[test]
fn a_bad_configuration_is_refused_with_exit_64_before_anything_is_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (state, tenants) = (dir.path().join("state"), dir.path().join("tenants.toml"));
    std::fs::write(&tenants, GLOBEX.replace("1 GiB", "1 GiBs")).unwrap();
    let port = common::free_port();
    let mut cfg = config(&state, &tenants);
    cfg.diameter.listen_tcp = vec![format!("127.0.0.1:{port}")];
    let e = refused(&cfg);
    assert_eq!(e.exit_code(), EXIT_CONFIG, "{e}");
    assert!(e.to_string().contains("node 'globex'"), "{e}");
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port was never bound");

    // A state directory that cannot be made is not the configuration's fault: exit 1.
    std::fs::write(&tenants, GLOBEX).unwrap();
    let mut cfg = config(&dir.path().join("a-file/state"), &tenants);
    std::fs::write(dir.path().join("a-file"), "not a directory").unwrap();
    cfg.diameter.listen_tcp = vec!["127.0.0.1:0".into()];
    let e = refused(&cfg);
    assert_eq!(e.exit_code(), 1, "{e}");
}
