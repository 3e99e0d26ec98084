//! The ocf-loadtest client (initiator side of the peer state machine) against the real daemon.

mod common;

use common::*;
use ocf_loadtest::client::{Client, ClientConfig};
use ocf_protocol::codes::{avp, command};

#[test]
fn client_opens_exchanges_watchdogs_and_disconnects() {
    let mut d = Daemon::start("");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = ClientConfig::default();
        let mut client = Client::connect_tcp(d.addr, &cfg).await.unwrap();
        assert_eq!(
            (client.server_host.as_str(), client.server_realm.as_str()),
            ("ocfd.localdomain", "localdomain")
        );
        let id = client.identity().clone();
        for _ in 0..3 {
            let dwa = client
                .request(command::DEVICE_WATCHDOG, |b, h, e| id.write_dwr(b, h, e))
                .await
                .unwrap();
            assert_eq!(dwa.find(avp::RESULT_CODE).unwrap().u32().unwrap(), 2001);
        }
        client.disconnect().await.unwrap();
    });
    d.wait_log("reason=PeerDisconnected(0)");
}
