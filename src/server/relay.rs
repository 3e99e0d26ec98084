//! A standby's Diameter side: gateways may connect to any node of a cluster. A standby accepts
//! them as any ocfd does (CER/CEA, DWR/DWA, DPR through the peer state machine) and relays
//! their requests to the partition's owner over one connection of its own (RFC 6733 §6.1.9):
//! Route-Record naming the gateway added, Hop-by-Hop replaced on the way up and restored on the
//! way down, End-to-End left alone. A request that already passed this node (its Route-Record
//! names it) is answered 3005 DIAMETER_LOOP_DETECTED; one that cannot reach an owner (none
//! yet, or its connection is down) is answered 3002 DIAMETER_UNABLE_TO_DELIVER by this node.
//! Requests the owner sends gateways (RAR, ASR) come down the same way, to the gateway their
//! Destination-Host names, and their answers go back up.
//! The owner is found in the partition's lease, which names its Diameter address. When this
//! node takes the partition over, the relay stops and its gateways connect again, to it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ocf_protocol::avp::Avp;
use ocf_protocol::codes::{DisconnectCause, ResultCode, avp as code};
use ocf_protocol::error::DiameterError;
use ocf_protocol::message::Message;
use ocf_protocol::peer::{Event, IdentityCheck, Peer, PeerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::ServerError;
use super::connection::{Cut, cut};
use super::route::Router;

/// Requests on their way to the owner; past this, gateways get 3002 at once.
const QUEUE: usize = 4096;
/// How long connecting to the owner may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes asked of a socket per read.
const READ_CHUNK: usize = 64 * 1024;
/// Requests written to the owner in one write, at most.
const MAX_BATCH: usize = 256;

/// A request on its way to the owner, and where its answer goes.
struct Forward {
    /// The request as it goes up: Route-Record added; its Hop-by-Hop is set by the upstream.
    frame: BytesMut,
    /// The request as the gateway sent it (for an answer made here).
    request: Message,
    reply: mpsc::UnboundedSender<Bytes>,
}

/// A request the owner sends a gateway (RAR, ASR), on its way down, and where its answer goes
/// (with the Hop-by-Hop the owner gave it).
struct Down {
    request: Message,
    reply: mpsc::UnboundedSender<Bytes>,
}

/// The gateways connected here, by Origin-Host: where the owner's requests for them go.
type Gateways = Arc<std::sync::Mutex<HashMap<String, mpsc::UnboundedSender<Down>>>>;

/// Requests relayed, by what became of them (told when the relay stops).
#[derive(Default)]
pub(super) struct RelayCounts {
    pub(super) forwarded: AtomicU64,
    pub(super) unable_to_deliver: AtomicU64,
    pub(super) loops: AtomicU64,
}

/// A running relay.
pub(super) struct Relay {
    stop: watch::Sender<bool>,
    tracker: TaskTracker,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub(super) counts: Arc<RelayCounts>,
}

/// Counts a gateway request the router handled, by what became of it.
fn routed(outcome: &'static str) {
    metrics::counter!("ocfd_cluster_routed_requests_total", "outcome" => outcome).increment(1);
}

/// Writes `req`'s error answer with `code` (this node's own answer).
fn error_answer(peer: &PeerConfig, req: &Message, result: ResultCode, why: &'static str) -> Bytes {
    let mut out = BytesMut::new();
    peer.identity
        .write_error_answer(&mut out, req, &DiameterError::new(result, why));
    out.freeze()
}

/// Sets a message's Hop-by-Hop Identifier.
fn set_hop_by_hop(frame: &mut [u8], hbh: u32) {
    if frame.len() >= 16 {
        frame[12..16].copy_from_slice(&hbh.to_be_bytes());
    }
}

/// The request with a Route-Record naming `peer` appended, its length fixed.
fn with_route_record(req: &Message, peer: &str) -> BytesMut {
    let mut f = BytesMut::from(&req.to_bytes()[..]);
    Avp::new(code::ROUTE_RECORD.code, 0x40, 0, peer.as_bytes()).encode(&mut f);
    let len = (f.len() as u32).to_be_bytes();
    f[1..4].copy_from_slice(&len[1..4]);
    f
}

impl Relay {
    /// Binds `addrs` (TCP) and `tls.0` (TLS/TCP) and relays each request that comes in to the
    /// owner of its partition (`router` says which partition; `owners` holds each one's owner,
    /// none: 3002).
    pub(super) fn start(
        addrs: &[SocketAddr],
        tls: (&[SocketAddr], Option<LiveTls>),
        peer: Arc<PeerConfig>,
        max_message_bytes: usize,
        owners: watch::Receiver<Vec<Option<SocketAddr>>>,
        router: Arc<Router>,
    ) -> Result<(Relay, Vec<SocketAddr>), ServerError> {
        let (stop, stop_rx) = watch::channel(false);
        let mut ups = Vec::new();
        let mut up_rxs = Vec::new();
        for _ in 0..router.partitions() {
            let (tx, rx) = mpsc::channel::<Forward>(QUEUE);
            ups.push(tx);
            up_rxs.push(rx);
        }
        let ups: Arc<[mpsc::Sender<Forward>]> = ups.into();
        let counts = Arc::new(RelayCounts::default());
        let gateways: Gateways = Arc::default();
        let tracker = TaskTracker::new();
        let mut tasks = Vec::new();
        let mut bound = Vec::new();
        let seed = Arc::new(AtomicU64::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
        ));
        let plain = addrs.iter().map(|a| (a, None, "tcp"));
        let secured = tls
            .1
            .iter()
            .flat_map(|t| tls.0.iter().map(move |a| (a, Some(t.clone()), "tls")));
        for (addr, tls, transport) in plain.chain(secured) {
            let l = ocf_transport::tcp::listen(*addr).map_err(|source| ServerError::Listen {
                transport,
                addr: addr.to_string(),
                source,
            })?;
            let local = l.local_addr().map_err(|source| ServerError::Listen {
                transport,
                addr: addr.to_string(),
                source,
            })?;
            info!(transport, addr = %local, "routing gateways to the partitions' owners");
            bound.push(local);
            let (peer, ups, router, stop, tracker2, counts, seed, gateways) = (
                peer.clone(),
                ups.clone(),
                router.clone(),
                stop_rx.clone(),
                tracker.clone(),
                counts.clone(),
                seed.clone(),
                gateways.clone(),
            );
            tasks.push(tokio::spawn(accept(
                l,
                tls,
                Link {
                    config: peer,
                    max_message_bytes,
                    ups,
                    router,
                    counts,
                    gateways,
                },
                stop,
                tracker2,
                seed,
            )));
        }
        for (partition, up_rx) in (0u32..).zip(up_rxs) {
            tasks.push(tokio::spawn(upstream(
                up_rx,
                Owner {
                    owners: owners.clone(),
                    partition,
                },
                peer.clone(),
                max_message_bytes,
                counts.clone(),
                gateways.clone(),
                stop_rx.clone(),
            )));
        }
        Ok((
            Relay {
                stop,
                tracker,
                tasks,
                counts,
            },
            bound,
        ))
    }

    /// Stops: the listeners close, every gateway is sent DPR (bounded), the owner's
    /// connection ends.
    pub(super) async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        self.tracker.close();
        let _ = tokio::time::timeout(grace, self.tracker.wait()).await;
        for t in self.tasks {
            t.abort();
        }
    }
}

/// What a gateway's connection to this standby shares with the others.
#[derive(Clone)]
struct Link {
    config: Arc<PeerConfig>,
    max_message_bytes: usize,
    /// Each partition's way to its owner.
    ups: Arc<[mpsc::Sender<Forward>]>,
    router: Arc<Router>,
    counts: Arc<RelayCounts>,
    gateways: Gateways,
}

/// Where one partition's owner takes requests, as the leases say.
struct Owner {
    owners: watch::Receiver<Vec<Option<SocketAddr>>>,
    partition: u32,
}

impl Owner {
    fn now(&self) -> Option<SocketAddr> {
        self.owners
            .borrow()
            .get(self.partition as usize)
            .copied()
            .flatten()
    }
}

/// A TLS listener's settings (see `diameter.tls`).
#[derive(Clone)]
pub(super) struct RelayTls {
    pub(super) config: Arc<rustls::ServerConfig>,
    /// How long a handshake may take.
    pub(super) timeout: Duration,
    pub(super) origin_host_in_certificate: bool,
}

/// A TLS listener's settings as they are now (a reload replaces them).
pub(super) type LiveTls = Arc<arc_swap::ArcSwap<RelayTls>>;

async fn accept(
    l: TcpListener,
    tls: Option<LiveTls>,
    link: Link,
    mut stop: watch::Receiver<bool>,
    tracker: TaskTracker,
    seed: Arc<AtomicU64>,
) {
    loop {
        tokio::select! {
            a = l.accept() => match a {
                Ok((stream, remote)) => {
                    let _ = ocf_transport::tcp::configure(&stream);
                    let local: Vec<IpAddr> = stream.local_addr().map(|a| vec![a.ip()]).unwrap_or_default();
                    let s = seed.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
                    match &tls {
                        None => {
                            tracker.spawn(downstream(stream, remote, local, s, link.clone(), stop.clone(), None));
                        }
                        Some(t) => {
                            // The handshake in the connection's own task: accepting goes on.
                            let (t, link, stop) = (t.load_full(), link.clone(), stop.clone());
                            tracker.spawn(async move {
                                if let Some((tls, identity)) = super::tls_handshake(t.config.clone(), stream, remote, t.timeout, t.origin_host_in_certificate).await {
                                    downstream(tls, remote, local, s, link, stop, identity).await;
                                }
                            });
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, "relay: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

/// Hands every whole frame read to `peer`, cut as this server's connections cut them: a bad
/// header goes to the peer state machine, which answers or closes as RFC 6733 says.
fn take_frames(rbuf: &mut BytesMut, max_message_bytes: usize, peer: &mut Peer) {
    let now = Instant::now();
    loop {
        match cut(rbuf, max_message_bytes) {
            Cut::Frame(f) => peer.handle_frame(now, f),
            Cut::Error(e, head) => {
                peer.handle_frame_error(&head, e);
                if e.is_fatal() {
                    // The stream cannot be delimited any more: nothing after it is read.
                    rbuf.clear();
                    return;
                }
            }
            Cut::Incomplete => return,
        }
    }
}

/// Writes what the peer state machine has to send; false if the socket failed.
async fn send_out<S: AsyncWrite + Unpin>(stream: &mut S, peer: &mut Peer) -> bool {
    if peer.transmit().is_empty() {
        return true;
    }
    let out = peer.transmit().split();
    stream.write_all(&out).await.is_ok()
}

/// Whether the message's Route-Records name `host` (it passed this node before).
fn routed_through(req: &Message, host: &str) -> bool {
    req.find_all(code::ROUTE_RECORD)
        .any(|a| a.identity().is_ok_and(|h| h.eq_ignore_ascii_case(host)))
}

/// One gateway's connection to this node's router (over TCP, or TLS with the check of the
/// Origin-Host its certificate names).
async fn downstream<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    remote: SocketAddr,
    local: Vec<IpAddr>,
    seed: u64,
    link: Link,
    mut stop: watch::Receiver<bool>,
    identity: Option<IdentityCheck>,
) {
    let Link {
        config,
        max_message_bytes,
        ups,
        router,
        counts,
        gateways,
    } = link;
    let mut peer = Peer::responder(config.clone(), &local, Instant::now(), seed);
    peer.accept_any_host();
    if let Some(check) = identity {
        peer.require_identity(check);
    }
    let (answers_tx, mut answers) = mpsc::unbounded_channel::<Bytes>();
    // The owner's requests for this gateway, and those sent and not yet answered, by the
    // Hop-by-Hop used here.
    let (downs_tx, mut downs) = mpsc::unbounded_channel::<Down>();
    let mut sent_down: HashMap<u32, Down> = HashMap::new();
    let mut registered: Option<String> = None;
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut stopping = *stop.borrow();
    if stopping {
        return;
    }
    loop {
        while let Some(ev) = peer.poll_event() {
            match ev {
                Event::Opened { origin_host, .. } => {
                    debug!(%remote, %origin_host, "relay: gateway open");
                    gateways
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(origin_host.clone(), downs_tx.clone());
                    registered = Some(origin_host);
                }
                Event::Request(req) => {
                    let own = &config.identity.origin_host;
                    let answer = if routed_through(&req, own) {
                        counts.loops.fetch_add(1, Ordering::Relaxed);
                        routed("loop");
                        Some(error_answer(
                            &config,
                            &req,
                            ResultCode::LoopDetected,
                            "the request already passed this node",
                        ))
                    } else {
                        match router.partition(&req) {
                            Err(e) => {
                                routed("unroutable");
                                let mut out = BytesMut::new();
                                config.identity.write_error_answer(&mut out, &req, &e);
                                Some(out.freeze())
                            }
                            Ok(p) => {
                                let from = peer.remote_host().unwrap_or_default().to_owned();
                                let f = Forward {
                                    frame: with_route_record(&req, &from),
                                    request: req,
                                    reply: answers_tx.clone(),
                                };
                                match ups[p as usize].try_send(f) {
                                    Ok(()) => None,
                                    Err(e) => {
                                        counts.unable_to_deliver.fetch_add(1, Ordering::Relaxed);
                                        routed("unable_to_deliver");
                                        let f = match e {
                                            mpsc::error::TrySendError::Full(f)
                                            | mpsc::error::TrySendError::Closed(f) => f,
                                        };
                                        Some(error_answer(
                                            &config,
                                            &f.request,
                                            ResultCode::UnableToDeliver,
                                            "the partition's owner cannot be reached now",
                                        ))
                                    }
                                }
                            }
                        }
                    };
                    if let Some(a) = answer {
                        peer.transmit().extend_from_slice(&a);
                    }
                }
                Event::Answer(msg) => {
                    // A gateway's answer to the owner's request: up, with the owner's
                    // Hop-by-Hop.
                    if let Some(d) = sent_down.remove(&msg.header.hop_by_hop) {
                        let mut a = BytesMut::from(&msg.to_bytes()[..]);
                        set_hop_by_hop(&mut a, d.request.header.hop_by_hop);
                        let _ = d.reply.send(a.freeze());
                    }
                }
                Event::Closed(reason) => debug!(%remote, ?reason, "relay: gateway closed"),
            }
        }
        if !send_out(&mut stream, &mut peer).await {
            break;
        }
        if peer.is_closed() {
            let _ = stream.shutdown().await;
            break;
        }
        rbuf.reserve(READ_CHUNK);
        tokio::select! {
            read = stream.read_buf(&mut rbuf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    break;
                }
                take_frames(&mut rbuf, max_message_bytes, &mut peer);
            }
            Some(a) = answers.recv() => {
                peer.transmit().extend_from_slice(&a);
                while let Ok(a) = answers.try_recv() {
                    peer.transmit().extend_from_slice(&a);
                }
            }
            Some(d) = downs.recv(), if peer.is_open() => {
                let (hbh, _) = peer.send_request(d.request.header.command_code);
                let mut f = BytesMut::from(&d.request.to_bytes()[..]);
                set_hop_by_hop(&mut f, hbh);
                peer.transmit().extend_from_slice(&f);
                sent_down.insert(hbh, d);
            }
            _ = super::connection::until(peer.poll_timeout()) => peer.handle_timeout(Instant::now()),
            _ = stop.changed(), if !stopping => {
                stopping = true;
                peer.disconnect(Instant::now(), DisconnectCause::Rebooting);
            }
        }
    }
    // Requests for this gateway now go nowhere: the owner hears 3002 from the upstream.
    if let Some(h) = registered {
        let mut g = gateways.lock().unwrap_or_else(|p| p.into_inner());
        if g.get(&h).is_some_and(|tx| tx.same_channel(&downs_tx)) {
            g.remove(&h);
        }
    }
    for (_, d) in sent_down {
        let _ = d.reply.send(error_answer(
            &config,
            &d.request,
            ResultCode::UnableToDeliver,
            "the gateway's connection to the relay ended",
        ));
    }
}

/// The connection to the owner: requests go up, answers come down to whoever waits.
async fn upstream(
    mut requests: mpsc::Receiver<Forward>,
    mut owner: Owner,
    config: Arc<PeerConfig>,
    max_message_bytes: usize,
    counts: Arc<RelayCounts>,
    gateways: Gateways,
    mut stop: watch::Receiver<bool>,
) {
    let unable = |f: &Forward, why: &'static str| {
        counts.unable_to_deliver.fetch_add(1, Ordering::Relaxed);
        routed("unable_to_deliver");
        let _ = f.reply.send(error_answer(
            &config,
            &f.request,
            ResultCode::UnableToDeliver,
            why,
        ));
    };
    let mut pause = Duration::from_millis(50);
    loop {
        owner.owners.mark_unchanged();
        let addr = owner.now();
        let connected = match addr {
            Some(a) => tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(a))
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        };
        let Some(mut stream) = connected else {
            // No owner to reach: every request now is answered here, until one can be.
            let wait = tokio::time::sleep(pause);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    Some(f) = requests.recv() => unable(&f, "no owner of the partition can be reached now"),
                    _ = &mut wait => break,
                    _ = owner.owners.changed() => break,
                    _ = stop.changed() => return,
                }
            }
            pause = (pause * 2).min(Duration::from_secs(1));
            continue;
        };
        pause = Duration::from_millis(50);
        let _ = ocf_transport::tcp::configure(&stream);
        let local: Vec<IpAddr> = stream
            .local_addr()
            .map(|a| vec![a.ip()])
            .unwrap_or_default();
        let mut peer = Peer::initiator(config.clone(), &local, Instant::now(), 1);
        peer.accept_any_host();
        let mut open = false;
        // Hop-by-Hop up → (the request, the gateway's Hop-by-Hop, where its answer goes).
        let mut pending: HashMap<u32, Forward> = HashMap::new();
        // Gateways' answers to the owner's requests, on their way up.
        let (owner_answers_tx, mut owner_answers) = mpsc::unbounded_channel::<Bytes>();
        let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
        // The answers of one read, gathered per gateway connection: one send (and one write
        // there) each, not one per answer.
        let mut answered: Vec<(mpsc::UnboundedSender<Bytes>, BytesMut)> = Vec::new();
        loop {
            while let Some(ev) = peer.poll_event() {
                match ev {
                    Event::Opened { origin_host, .. } => {
                        info!(owner = %origin_host, addr = ?addr, "relay: connected to the partition's owner");
                        open = true;
                    }
                    Event::Answer(msg) => {
                        if let Some(f) = pending.remove(&msg.header.hop_by_hop) {
                            let start =
                                match answered.iter().position(|(r, _)| r.same_channel(&f.reply)) {
                                    Some(i) => i,
                                    None => {
                                        answered.push((f.reply.clone(), BytesMut::new()));
                                        answered.len() - 1
                                    }
                                };
                            let out = &mut answered[start].1;
                            let at = out.len();
                            msg.encode(out);
                            set_hop_by_hop(&mut out[at..], f.request.header.hop_by_hop);
                            counts.forwarded.fetch_add(1, Ordering::Relaxed);
                            routed("relayed");
                        }
                    }
                    Event::Request(req) => {
                        // A request the owner sends a gateway (RAR, ASR): down to it by its
                        // Destination-Host, if it is connected here.
                        let to = req
                            .find(code::DESTINATION_HOST)
                            .and_then(|a| a.identity().ok())
                            .and_then(|h| {
                                gateways
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .get(h)
                                    .cloned()
                            });
                        let down = Down {
                            request: req,
                            reply: owner_answers_tx.clone(),
                        };
                        let refused = match to {
                            Some(tx) => tx.send(down).err().map(|e| e.0),
                            None => Some(down),
                        };
                        if let Some(d) = refused {
                            let a = error_answer(
                                &config,
                                &d.request,
                                ResultCode::UnableToDeliver,
                                "the gateway is not connected to this relay",
                            );
                            peer.transmit().extend_from_slice(&a);
                        }
                    }
                    Event::Closed(reason) => {
                        info!(?reason, "relay: the owner's connection closed")
                    }
                }
            }
            for (reply, out) in answered.drain(..) {
                let _ = reply.send(out.freeze());
            }
            if !send_out(&mut stream, &mut peer).await {
                break;
            }
            if peer.is_closed() {
                break;
            }
            rbuf.reserve(READ_CHUNK);
            tokio::select! {
                read = stream.read_buf(&mut rbuf) => {
                    if !matches!(read, Ok(n) if n > 0) {
                        break;
                    }
                    take_frames(&mut rbuf, max_message_bytes, &mut peer);
                }
                Some(a) = owner_answers.recv() => {
                    peer.transmit().extend_from_slice(&a);
                }
                // Until the owner's CEA, requests wait in the queue (the capabilities exchange
                // is bounded by the peer state machine's timer; the queue by its size).
                f = requests.recv(), if open => {
                    let Some(f) = f else { return };
                    // Every request waiting goes in the same write (a write per request
                    // would cost a system call each).
                    let mut next = Some(f);
                    let mut n = 0;
                    while let Some(mut f) = next.take() {
                        let (hbh, _) = peer.send_request(f.request.header.command_code);
                        set_hop_by_hop(&mut f.frame, hbh);
                        peer.transmit().extend_from_slice(&f.frame);
                        pending.insert(hbh, f);
                        n += 1;
                        if n < MAX_BATCH {
                            next = requests.try_recv().ok();
                        }
                    }
                }
                _ = super::connection::until(peer.poll_timeout()) => peer.handle_timeout(Instant::now()),
                _ = owner.owners.changed() => {
                    // Another owner: this connection ends, the next goes to it.
                    if owner.now() != addr {
                        peer.disconnect(Instant::now(), DisconnectCause::Rebooting);
                    }
                }
                _ = stop.changed() => {
                    for (_, f) in pending.drain() {
                        unable(&f, "this node stopped relaying");
                    }
                    return;
                }
            }
        }
        // What was sent up and not answered will not be: the gateways hear it now.
        for (_, f) in pending.drain() {
            unable(&f, "the connection to the partition's owner was lost");
        }
    }
}
