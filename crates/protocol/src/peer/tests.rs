//! Two peers in simulated time: bytes move between them only when the harness says so, and
//! time advances only by [`Pair::advance`], so every test is deterministic.

use super::*;
use crate::frame;
use crate::{Header, MessageWriter};

fn identity(host: &str) -> LocalIdentity {
    LocalIdentity {
        origin_host: host.into(),
        origin_realm: "localdomain".into(),
        host_ip_addresses: vec![],
        vendor_id: 0,
        product_name: "test".into(),
        firmware_revision: 1,
        origin_state_id: 7,
        auth_application_ids: vec![application::CREDIT_CONTROL],
        supported_vendor_ids: vec![10415],
    }
}

fn config(host: &str) -> Arc<PeerConfig> {
    Arc::new(PeerConfig {
        identity: identity(host),
        dictionary: Arc::new(Dictionary::builtin().unwrap()),
        watchdog: Duration::from_secs(30),
        handshake_timeout: Duration::from_secs(10),
        dpa_timeout: Duration::from_secs(5),
        allowed_peers: None,
    })
}

const LOCAL: [IpAddr; 1] = [IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)];

/// Cuts whole frames out of a byte buffer.
fn frames(buf: &mut BytesMut) -> Vec<Bytes> {
    let mut out = Vec::new();
    while let Ok(Some(len)) = frame::check(buf, 1 << 20) {
        if buf.len() < len {
            break;
        }
        out.push(buf.split_to(len).freeze());
    }
    assert!(buf.is_empty(), "partial frame left over");
    out
}

struct Pair {
    /// The initiator (a client such as a gateway).
    client: Peer,
    /// The responder (ocfd).
    server: Peer,
    now: Instant,
    /// Messages seen on the wire: (from client?, command code, is request).
    wire: Vec<(bool, u32, bool)>,
    /// Deliver nothing the server sends (a dead server).
    server_silent: bool,
}

impl Pair {
    fn new(client_cfg: Arc<PeerConfig>, server_cfg: Arc<PeerConfig>) -> Pair {
        let now = Instant::now();
        Pair {
            client: Peer::initiator(client_cfg, &LOCAL, now, 1),
            server: Peer::responder(server_cfg, &LOCAL, now, 2),
            now,
            wire: Vec::new(),
            server_silent: false,
        }
    }

    fn standard() -> Pair {
        Pair::new(config("gw.localdomain"), config("ocfd.localdomain"))
    }

    /// Moves bytes both ways until neither side has anything to send.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            let mut c2s = self.client.transmit().split();
            for f in frames(&mut c2s) {
                moved = true;
                let h = parse_header(&f).unwrap().1;
                self.wire.push((true, h.command_code, h.flags.is_request()));
                self.server.handle_frame(self.now, f);
            }
            let mut s2c = self.server.transmit().split();
            if !self.server_silent {
                for f in frames(&mut s2c) {
                    moved = true;
                    let h = parse_header(&f).unwrap().1;
                    self.wire
                        .push((false, h.command_code, h.flags.is_request()));
                    self.client.handle_frame(self.now, f);
                }
            }
            if !moved {
                break;
            }
        }
    }

    /// Advances time to `until`, firing timeouts in order and pumping after each.
    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        loop {
            let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    self.client.handle_timeout(self.now);
                    self.server.handle_timeout(self.now);
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = until;
    }

    fn open() -> Pair {
        let mut p = Pair::standard();
        p.pump();
        assert!(p.client.is_open() && p.server.is_open());
        p
    }
}

fn events(p: &mut Peer) -> Vec<Event> {
    std::iter::from_fn(|| p.poll_event()).collect()
}

/// Sends one raw request from the "client" side straight into the server and decodes its answer.
fn ask(server: &mut Peer, now: Instant, build: impl FnOnce(&mut BytesMut)) -> Option<Message> {
    let mut buf = BytesMut::new();
    build(&mut buf);
    server.handle_frame(now, buf.freeze());
    let mut out = server.transmit().split();
    let mut f = frames(&mut out);
    assert!(f.len() <= 1);
    f.pop().map(|b| Message::decode(b).unwrap())
}

fn result_code(m: &Message) -> u32 {
    m.find(c::RESULT_CODE).unwrap().u32().unwrap()
}

#[test]
fn capabilities_exchange_opens_both_sides() {
    let mut p = Pair::standard();
    p.pump();
    assert_eq!(p.wire, vec![(true, 257, true), (false, 257, false)]);
    assert_eq!(
        events(&mut p.server),
        vec![Event::Opened {
            origin_host: "gw.localdomain".into(),
            origin_realm: "localdomain".into()
        }]
    );
    assert_eq!(
        events(&mut p.client),
        vec![Event::Opened {
            origin_host: "ocfd.localdomain".into(),
            origin_realm: "localdomain".into()
        }]
    );
    assert_eq!(p.server.remote_host(), Some("gw.localdomain"));
}

#[test]
fn cea_carries_the_capabilities() {
    let mut server = Peer::responder(config("ocfd.localdomain"), &LOCAL, Instant::now(), 3);
    let id = identity("gw.localdomain");
    let cea = ask(&mut server, Instant::now(), |b| {
        let mut h = Header::request(257, 0, 5, 6);
        h.flags.0 = 0x80;
        let mut w = MessageWriter::new(b, &h);
        w.identity(c::ORIGIN_HOST, &id.origin_host);
        w.identity(c::ORIGIN_REALM, &id.origin_realm);
        w.address(c::HOST_IP_ADDRESS, &crate::types::Address::Ip(LOCAL[0]));
        w.u32(c::VENDOR_ID, 0);
        w.utf8(c::PRODUCT_NAME, "x");
        let g = w.begin_group(c::VENDOR_SPECIFIC_APPLICATION_ID);
        w.u32(c::VENDOR_ID, 10415);
        w.u32(c::AUTH_APPLICATION_ID, 4);
        w.end_group(g);
        w.finish();
    })
    .unwrap();
    assert_eq!((cea.header.hop_by_hop, cea.header.end_to_end), (5, 6));
    assert_eq!(result_code(&cea), 2001);
    assert_eq!(
        cea.find(c::HOST_IP_ADDRESS).unwrap().address().unwrap(),
        crate::types::Address::Ip(LOCAL[0])
    );
    assert_eq!(
        cea.find(c::SUPPORTED_VENDOR_ID).unwrap().u32().unwrap(),
        10415
    );
    assert_eq!(cea.find(c::AUTH_APPLICATION_ID).unwrap().u32().unwrap(), 4);
    assert!(
        cea.find(c::VENDOR_SPECIFIC_APPLICATION_ID).is_some(),
        "echoes the 3GPP form"
    );
    assert!(cea.find(c::ORIGIN_STATE_ID).is_some() && cea.find(c::FIRMWARE_REVISION).is_some());
    Dictionary::builtin().unwrap().validate(&cea).unwrap();
}

#[test]
fn idle_connection_exchanges_watchdogs_and_stays_open() {
    let mut p = Pair::open();
    p.wire.clear();
    p.advance(Duration::from_secs(600));
    assert!(p.client.is_open() && p.server.is_open());
    let dwrs = p.wire.iter().filter(|w| w.1 == 280 && w.2).count();
    let dwas = p.wire.iter().filter(|w| w.1 == 280 && !w.2).count();
    // One DWR per Tw (28..32 s) of silence, each answered.
    assert!((18..=22).contains(&dwrs), "{dwrs} DWRs in 600 s");
    assert_eq!(dwrs, dwas);
    assert_eq!(p.client.watchdog(), Watchdog::Okay);
}

#[test]
fn watchdogs_flow_both_ways_over_time() {
    let mut p = Pair::open();
    p.wire.clear();
    p.advance(Duration::from_secs(3600));
    let from_client = p.wire.iter().filter(|w| w.0 && w.1 == 280 && w.2).count();
    let from_server = p.wire.iter().filter(|w| !w.0 && w.1 == 280 && w.2).count();
    assert!(
        from_client > 0 && from_server > 0,
        "client {from_client}, server {from_server}"
    );
}

#[test]
fn silent_peer_goes_suspect_then_down() {
    let mut p = Pair::open();
    p.server_silent = true;
    let start = p.now;
    // First interval: DWR sent, unanswered.
    p.advance(Duration::from_secs(33));
    assert_eq!(p.client.watchdog(), Watchdog::Okay);
    p.advance(Duration::from_secs(31));
    assert_eq!(p.client.watchdog(), Watchdog::Suspect);
    assert!(p.client.is_open());
    p.advance(Duration::from_secs(32));
    assert!(p.client.is_closed());
    let evs = events(&mut p.client);
    assert_eq!(evs.last(), Some(&Event::Closed(CloseReason::WatchdogDown)));
    let elapsed = p.now - start;
    assert!(elapsed >= Duration::from_secs(84), "{elapsed:?}");
}

#[test]
fn disconnect_sends_dpr_and_closes_on_dpa() {
    let mut p = Pair::open();
    events(&mut p.client);
    events(&mut p.server);
    p.client.disconnect(p.now, DisconnectCause::Rebooting);
    assert_eq!(p.client.state(), State::Closing);
    p.pump();
    assert_eq!(
        events(&mut p.server),
        vec![Event::Closed(CloseReason::PeerDisconnected(0))]
    );
    assert_eq!(
        events(&mut p.client),
        vec![Event::Closed(CloseReason::Disconnected)]
    );
    assert!(p.wire.ends_with(&[(true, 282, true), (false, 282, false)]));
}

#[test]
fn missing_dpa_times_out() {
    let mut p = Pair::open();
    p.server_silent = true;
    p.client.disconnect(p.now, DisconnectCause::Busy);
    p.advance(Duration::from_secs(6));
    assert_eq!(
        events(&mut p.client).last(),
        Some(&Event::Closed(CloseReason::DpaTimeout))
    );
}

#[test]
fn no_cer_in_time_closes() {
    let now = Instant::now();
    let mut s = Peer::responder(config("ocfd.localdomain"), &LOCAL, now, 1);
    s.handle_timeout(now + Duration::from_secs(9));
    assert!(!s.is_closed());
    s.handle_timeout(now + Duration::from_secs(10));
    assert_eq!(
        events(&mut s),
        vec![Event::Closed(CloseReason::HandshakeTimeout)]
    );
}

#[test]
fn no_common_application_is_5010() {
    let mut client_cfg = (*config("gw.localdomain")).clone();
    client_cfg.identity.auth_application_ids = vec![16777238];
    let mut p = Pair::new(Arc::new(client_cfg), config("ocfd.localdomain"));
    p.pump();
    assert_eq!(
        events(&mut p.server),
        vec![Event::Closed(CloseReason::HandshakeFailed(5010))]
    );
    assert_eq!(
        events(&mut p.client),
        vec![Event::Closed(CloseReason::HandshakeFailed(5010))]
    );
}

#[test]
fn unknown_peer_is_3010_with_e_bit() {
    let mut server_cfg = (*config("ocfd.localdomain")).clone();
    server_cfg.allowed_peers = Some(vec!["pgw1.localdomain".into()]);
    let mut s = Peer::responder(Arc::new(server_cfg), &LOCAL, Instant::now(), 1);
    let mut c = Peer::initiator(config("gw.localdomain"), &LOCAL, Instant::now(), 1);
    let mut cer = c.transmit().split();
    let cea = ask(&mut s, Instant::now(), |b| {
        b.extend_from_slice(&frames(&mut cer)[0])
    })
    .unwrap();
    assert_eq!(result_code(&cea), 3010);
    assert!(cea.header.flags.is_error());
    assert!(s.is_closed());
}

#[test]
fn only_cer_before_the_handshake() {
    let now = Instant::now();
    let mut s = Peer::responder(config("ocfd.localdomain"), &LOCAL, now, 1);
    let id = identity("gw.localdomain");
    let ans = ask(&mut s, now, |b| id.write_dwr(b, 1, 1)).unwrap();
    assert_eq!(result_code(&ans), 5012);
    assert!(s.is_closed());
}

fn ccr(b: &mut BytesMut, app: u32, code: u32, realm: &str) {
    let mut w = MessageWriter::new(b, &Header::request(code, app, 9, 9));
    w.utf8(c::SESSION_ID, "gw;1;2");
    w.identity(c::ORIGIN_HOST, "gw.localdomain");
    w.identity(c::ORIGIN_REALM, "localdomain");
    w.identity(c::DESTINATION_REALM, realm);
    w.u32(c::AUTH_APPLICATION_ID, app);
    w.utf8(c::SERVICE_CONTEXT_ID, "32251@3gpp.org");
    w.u32(c::CC_REQUEST_TYPE, 1);
    w.u32(c::CC_REQUEST_NUMBER, 0);
    w.finish();
}

#[test]
fn application_requests_are_checked_then_delivered() {
    let mut p = Pair::open();
    events(&mut p.server);
    let now = p.now;
    let s = &mut p.server;

    let wrong_app = ask(s, now, |b| ccr(b, 16777238, 272, "localdomain")).unwrap();
    assert_eq!(result_code(&wrong_app), 3007);
    assert!(wrong_app.header.flags.is_error());
    assert_eq!(wrong_app.session_id().unwrap().utf8().unwrap(), "gw;1;2");

    let wrong_cmd = ask(s, now, |b| ccr(b, 4, 999, "localdomain")).unwrap();
    assert_eq!(result_code(&wrong_cmd), 3001);

    let wrong_realm = ask(s, now, |b| ccr(b, 4, 272, "elsewhere.net")).unwrap();
    assert_eq!(result_code(&wrong_realm), 3003);
    assert!(wrong_realm.find(c::FAILED_AVP).is_some());

    assert!(ask(s, now, |b| ccr(b, 4, 272, "localdomain")).is_none());
    match events(s).as_slice() {
        [Event::Request(m)] => assert_eq!(m.header.command_code, 272),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unmatched_answer_is_discarded_and_e_bit_request_is_3008() {
    let mut p = Pair::open();
    let now = p.now;
    let id = identity("gw.localdomain");
    let none = ask(&mut p.server, now, |b| {
        let req = Header::request(280, 0, 0xdead, 0xbeef);
        id.write_dwa(b, &req);
    });
    assert!(none.is_none());
    assert!(p.server.is_open());

    let ans = ask(&mut p.server, now, |b| {
        id.write_dwr(b, 77, 78);
        b[4] |= 0x20;
    })
    .unwrap();
    assert_eq!(result_code(&ans), 3008);
    assert!(ans.header.flags.is_error());
    assert_eq!(ans.header.hop_by_hop, 77);
    assert!(p.server.is_open());
}

#[test]
fn frame_errors_answer_then_close_when_fatal() {
    let now = Instant::now();
    let mut s = Peer::responder(config("ocfd.localdomain"), &LOCAL, now, 1);
    let mut head = BytesMut::new();
    identity("gw.localdomain").write_dwr(&mut head, 1, 2);
    head[0] = 2;
    s.handle_frame_error(&head[..20], FrameError::UnsupportedVersion(2));
    let mut out = s.transmit().split();
    let ans = Message::decode(frames(&mut out).remove(0)).unwrap();
    assert_eq!(result_code(&ans), 5011);
    assert!(!ans.header.flags.is_error());
    assert!(s.is_closed());
}

/// A request for another host of our realm is answered 3002 (with the Destination-Host as
/// Failed-AVP), unless the peer accepts any host (a relay, a cluster node): then it is handed
/// up like one for us. Another realm stays 3003 either way.
#[test]
fn requests_for_another_host_are_refused_unless_any_host_is_accepted() {
    let for_host = |b: &mut BytesMut, realm: &str, host: &str| {
        let mut w = MessageWriter::new(b, &Header::request(272, 4, 9, 9));
        w.utf8(c::SESSION_ID, "gw;1;3");
        w.identity(c::ORIGIN_HOST, "gw.localdomain");
        w.identity(c::ORIGIN_REALM, "localdomain");
        w.identity(c::DESTINATION_REALM, realm);
        w.identity(c::DESTINATION_HOST, host);
        w.u32(c::AUTH_APPLICATION_ID, 4);
        w.utf8(c::SERVICE_CONTEXT_ID, "32251@3gpp.org");
        w.u32(c::CC_REQUEST_TYPE, 1);
        w.u32(c::CC_REQUEST_NUMBER, 0);
        w.finish();
    };
    let mut p = Pair::open();
    events(&mut p.server);
    let now = p.now;
    let s = &mut p.server;
    let refused = ask(s, now, |b| for_host(b, "localdomain", "other.localdomain")).unwrap();
    assert_eq!(result_code(&refused), 3002);
    assert!(refused.find(c::FAILED_AVP).is_some());
    s.accept_any_host();
    assert!(ask(s, now, |b| for_host(b, "localdomain", "other.localdomain")).is_none());
    match events(s).as_slice() {
        [Event::Request(m)] => assert_eq!(m.header.command_code, 272),
        other => panic!("{other:?}"),
    }
    let elsewhere = ask(s, now, |b| {
        for_host(b, "elsewhere.net", "other.elsewhere.net")
    })
    .unwrap();
    assert_eq!(result_code(&elsewhere), 3003);
}
