//! One task per connection: read into a buffer, cut whole frames, let the peer state machine
//! handle them, answer application requests, and write everything one read produced in one
//! write. Loops until the peer is closed, the socket ends, or a half-sent message stalls.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{Shared, dispatch, meter, overload};
use ocf_protocol::codes::DisconnectCause;
use ocf_protocol::doic;
use ocf_protocol::frame::{self, FrameError};
use ocf_protocol::header::HEADER_LEN;
use ocf_protocol::peer::{Event, Peer, State};

/// Bytes asked of the socket per read: large enough that one read takes in what a pipelining
/// peer sent while the last batch was answered, so the queue is here, where overload shedding
/// sees it, and not in the kernel.
const READ_CHUNK: usize = 256 * 1024;
/// How many frames pass between looks at the clock for overload shedding; the first this many
/// of every read are always answered, so a connection always makes progress.
const SHED_CHECK_EVERY: u32 = 16;

/// What the front of the read buffer holds.
pub(super) enum Cut {
    Frame(Bytes),
    Error(FrameError, [u8; HEADER_LEN]),
    Incomplete,
}

pub(super) fn cut(buf: &mut BytesMut, max: usize) -> Cut {
    let mut head = [0u8; HEADER_LEN];
    match frame::check(buf, max) {
        Ok(Some(len)) if buf.len() >= len => Cut::Frame(buf.split_to(len).freeze()),
        Ok(_) => Cut::Incomplete,
        // Delimited but misaligned: skip the whole frame once it is here.
        Err(FrameError::Unaligned(len)) if buf.len() >= len as usize => {
            head.copy_from_slice(&buf[..HEADER_LEN]);
            buf.advance(len as usize);
            Cut::Error(FrameError::Unaligned(len), head)
        }
        Err(FrameError::Unaligned(_)) => Cut::Incomplete,
        Err(e) => {
            head.copy_from_slice(&buf[..HEADER_LEN]);
            Cut::Error(e, head)
        }
    }
}

/// Whether a frame is a credit-control request (what overload shedding may refuse).
fn is_credit_control_request(frame: &[u8]) -> bool {
    frame.len() >= HEADER_LEN
        && frame[4] & 0x80 != 0
        && frame[5..8] == [0, 1, 16]
        && frame[8..12] == 4u32.to_be_bytes()
}

/// Handles what the peer state machine has for the upper layer: logs opens and closes and
/// answers application requests, credit control joining `batch`. Returns how many requests
/// it answered.
#[allow(clippy::too_many_arguments)]
fn answer_events<'e>(
    peer: &mut Peer,
    store: &'e ocf_store::Store,
    sy: &super::sy::Sy,
    batch: &mut Option<ocf_charging::CcrBatch<'e>>,
    remote: SocketAddr,
    tracked: &mut Option<Vec<Tracked>>,
    reports: &mut Doic,
    ours: &mut Ours,
    peers: &super::abort::Peers,
) -> u64 {
    let mut answered = 0;
    while let Some(ev) = peer.poll_event() {
        match ev {
            Event::Opened {
                origin_host,
                origin_realm,
            } => {
                info!(%remote, %origin_host, %origin_realm, "peer open");
                ours.opened = Some((origin_host, origin_realm));
            }
            Event::Request(msg) => {
                // A request relayed for another node (a cluster's standby): requests for that
                // node go back the same way.
                if let (Some(via), Some(origin)) = (
                    peer.remote_host(),
                    msg.find(ocf_protocol::codes::avp::ORIGIN_HOST)
                        .and_then(|a| a.identity().ok()),
                ) {
                    if !origin.eq_ignore_ascii_case(via) {
                        peers.learn(origin, via);
                    }
                }
                let (identity, out) = peer.identity_and_transmit();
                let start = out.len();
                dispatch::answer(store, sy, batch, identity, out, &msg);
                let h = &msg.header;
                if h.application_id == ocf_protocol::codes::application::CREDIT_CONTROL
                    && h.command_code == ocf_protocol::codes::command::CREDIT_CONTROL
                {
                    if reports.report.is_some() && doic::announced(msg.avps()).is_some_and(loss) {
                        reports.add(out, start);
                    }
                    if let Some(t) = tracked.as_mut() {
                        t.push(Tracked {
                            start,
                            end: out.len(),
                            request: msg,
                        });
                    }
                }
                answered += 1;
            }
            Event::Answer(msg) => {
                // An answer to a request we sent (ASR, RAR): to whoever waits for it.
                if let Some(reply) = ours.awaiting.remove(&msg.header.hop_by_hop) {
                    let _ = reply.send(msg);
                }
            }
            Event::Closed(reason) => {
                info!(%remote, host = peer.remote_host().unwrap_or("-"), ?reason, "peer closed")
            }
        }
    }
    answered
}

/// Requests this connection sent for others (ASR, RAR), awaiting their answers by Hop-by-Hop,
/// and the peer's identity once it is open.
#[derive(Default)]
struct Ours {
    opened: Option<(String, String)>,
    awaiting: std::collections::HashMap<u32, tokio::sync::oneshot::Sender<ocf_protocol::Message>>,
}

/// Answers awaited at once at most; past it the oldest waiter is dropped (it sees no answer).
const MAX_AWAITING: usize = 4096;

/// The DOIC report the answers of one batch carry (None: DOIC off), and how many carried an
/// OC-OLR.
struct Doic {
    report: Option<arc_swap::Guard<Arc<overload::Report>>>,
    olr_sent: u64,
}

impl Doic {
    /// The report out now, if DOIC is on.
    fn new(live: &super::Live, shared: &Shared) -> Doic {
        Doic {
            report: (live.doic_validity_s > 0).then(|| shared.overload.report()),
            olr_sent: 0,
        }
    }

    /// Adds the report to the answer at `start`, the last in `out`.
    fn add(&mut self, out: &mut BytesMut, start: usize) {
        if let Some(r) = &self.report {
            if doic::append(out, start, &r.avps) && r.olr.is_some() {
                self.olr_sent += 1;
            }
        }
    }

    /// Counts the answers that carried an OC-OLR.
    fn finish(self, shared: &Shared) {
        if self.olr_sent > 0 {
            shared
                .olr_sent
                .fetch_add(self.olr_sent, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Whether an OC-Feature-Vector has the loss algorithm, the only one ocfd reports for.
fn loss(vector: u64) -> bool {
    vector & doic::OLR_DEFAULT_ALGO != 0
}

/// A credit-control answer waiting in the output buffer for its records to become durable, and
/// its request (to answer it 3004 instead if they do not in time).
struct Tracked {
    start: usize,
    end: usize,
    request: ocf_protocol::Message,
}

/// Replaces every tracked answer in `out` by a 3004 TOO_BUSY (E bit) for its request: their
/// records did not become durable in time, so none may leave as a success.
fn answer_not_durable(
    identity: &ocf_protocol::base::LocalIdentity,
    out: &mut BytesMut,
    tracked: &[Tracked],
) {
    let old = out.split();
    let mut at = 0;
    let e = ocf_protocol::error::DiameterError::new(
        ocf_protocol::codes::ResultCode::TooBusy,
        "the charging journal cannot be written now; try again",
    );
    for t in tracked {
        if t.start < at || t.end > old.len() {
            continue;
        }
        out.extend_from_slice(&old[at..t.start]);
        identity.write_error_answer(out, &t.request, &e);
        at = t.end;
    }
    out.extend_from_slice(&old[at..]);
}

/// Keeps `ocfd_peers` by state: a connection counts in its peer's state until it ends.
struct PeerGauge<'m> {
    meters: &'m meter::Meters,
    state: State,
}

impl<'m> PeerGauge<'m> {
    fn new(meters: &'m meter::Meters, state: State) -> Self {
        meters.peer_state(None, Some(state));
        PeerGauge { meters, state }
    }

    fn set(&mut self, state: State) {
        if state != self.state {
            self.meters.peer_state(Some(self.state), Some(state));
            self.state = state;
        }
    }
}

impl Drop for PeerGauge<'_> {
    fn drop(&mut self) {
        self.meters.peer_state(Some(self.state), None);
    }
}

/// Counts a connection for as long as its driver runs.
struct Counted(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Counted {
    fn new(c: &std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Counted(c.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Sleeps until `deadline` (for ever without one).
pub(super) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

pub(crate) async fn drive<S>(
    mut stream: S,
    remote: SocketAddr,
    local: Vec<IpAddr>,
    seed: u64,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    identity: Option<ocf_protocol::peer::IdentityCheck>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Settings a reload may change; checked once per read.
    let mut live = shared.live.load_full();
    let mut peer = Peer::responder(live.peer.clone(), &local, Instant::now(), seed);
    if live.any_host {
        peer.accept_any_host();
    }
    if let Some(check) = identity {
        peer.require_identity(check);
    }
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    // When the oldest unfinished message started arriving.
    let mut partial_since: Option<Instant> = None;
    let mut stopping = *stop.borrow();
    // The journal sequence this batch's answers wait for.
    let mut wait_for = 0u64;
    if stopping {
        return;
    }
    debug!(%remote, "connection accepted");
    let _counted = Counted::new(&shared.connections);
    let mut state = PeerGauge::new(&shared.meters, peer.state());
    let mut meters = meter::Local::default();
    // When the read whose answers are being written came in.
    let mut read_at: Option<Instant> = None;
    // In write and fsync durability, the credit-control answers waiting on the journal.
    let mut tracked: Option<Vec<Tracked>> = shared
        .store
        .journal()
        .filter(|j| j.durability() != ocf_store::writer::Durability::Async)
        .map(|_| Vec::new());
    // Requests others want sent to this peer (ASR, RAR), once it is open.
    let mut ours = Ours::default();
    let mut registered: Option<super::abort::Registered> = None;
    loop {
        // Answer events (application requests) into the same output buffer, as one batch;
        // the batch (it holds the snapshot gate) ends before anything is awaited.
        {
            let mut batch = None;
            let mut reports = Doic::new(&live, &shared);
            let n = answer_events(
                &mut peer,
                &shared.store,
                &shared.sy,
                &mut batch,
                remote,
                &mut tracked,
                &mut reports,
                &mut ours,
                &shared.peers,
            );
            reports.finish(&shared);
            if let Some(b) = batch.take() {
                wait_for = wait_for.max(shared.store.hand_over(b.finish()));
            }
            if n > 0 {
                shared
                    .requests
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if wait_for > 0 {
            // Write and fsync modes: the answers leave once their records are durable, and
            // never as a success if they do not become durable in time.
            if let Some(j) = shared.store.journal() {
                if !j.is_durable(wait_for) {
                    let mut durable = shared.durable.clone();
                    let in_time = tokio::time::timeout(
                        live.durable_timeout,
                        durable.wait_for(|d| *d >= wait_for),
                    )
                    .await
                    .is_ok_and(|r| r.is_ok());
                    if !in_time {
                        let t = tracked.take().unwrap_or_default();
                        let (identity, out) = peer.identity_and_transmit();
                        answer_not_durable(identity, out, &t);
                        shared
                            .not_durable
                            .fetch_add(t.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        warn!(%remote, answers = t.len(), sequence = wait_for, "journal records not durable in time: answered 3004");
                        tracked = Some(Vec::new());
                    }
                }
            }
            wait_for = 0;
        }
        if let Some(t) = tracked.as_mut() {
            t.clear();
        }
        if !peer.transmit().is_empty() {
            let out = peer.transmit().split();
            meters.encoded(&out);
            if let Err(e) = stream.write_all(&out).await {
                debug!(%remote, error = %e, "write failed");
                break;
            }
            let elapsed = read_at.map(|t| t.elapsed()).unwrap_or_default();
            shared.meters.add(&mut meters, elapsed);
        }
        if let Some((host, realm)) = ours.opened.take() {
            registered = Some(shared.peers.register(&host, &realm));
        }
        state.set(peer.state());
        if peer.is_closed() {
            let _ = stream.shutdown().await;
            break;
        }
        let partial_deadline = partial_since.map(|t| t + live.partial_message_timeout);
        let deadline = [peer.poll_timeout(), partial_deadline]
            .into_iter()
            .flatten()
            .min();
        let sleep = until(deadline);
        rbuf.reserve(READ_CHUNK);
        tokio::select! {
            read = stream.read_buf(&mut rbuf) => {
                match read {
                    Ok(0) | Err(_) => {
                        debug!(%remote, buffered = rbuf.len(), "connection ended by peer");
                        break;
                    }
                    Ok(_) => {}
                }
                if !Arc::ptr_eq(&shared.live.load(), &live) {
                    live = shared.live.load_full();
                    peer.set_config(live.peer.clone());
                }
                let now = Instant::now();
                read_at = Some(now);
                // Requests are answered as they are cut: the k-th of a read has waited for the
                // k before it. Once that queue is past the overload budget, credit-control
                // requests are refused (3004) at a fraction of the cost of answering them.
                let (mut frames, mut shedding, mut shed, mut answered) = (0u32, false, 0u64, 0u64);
                let mut batch = None;
                let mut reports = Doic::new(&live, &shared);
                loop {
                    match cut(&mut rbuf, live.max_message_bytes) {
                        Cut::Frame(f) => {
                            meters.request(&f);
                            if let Some(budget) = live.overload_queue {
                                // The queue ahead of this request, against the measured cost
                                // of one, and the clock: preemption alone cannot trip it.
                                if !shedding && frames > 0 && frames % SHED_CHECK_EVERY == 0 {
                                    shedding = shared.overload.over(frames, now.elapsed(), budget);
                                }
                                frames += 1;
                                if shedding && peer.is_open() && is_credit_control_request(&f) {
                                    let (identity, out) = peer.identity_and_transmit();
                                    let start = out.len();
                                    if identity.write_busy_answer(out, &f) {
                                        if reports.report.is_some() && doic::frame_announces_loss(&f) {
                                            reports.add(out, start);
                                        }
                                        shed += 1;
                                        continue;
                                    }
                                }
                            }
                            peer.handle_frame(now, f);
                            answered += answer_events(&mut peer, &shared.store, &shared.sy, &mut batch, remote, &mut tracked, &mut reports, &mut ours, &shared.peers);
                        }
                        Cut::Error(e, head) => {
                            debug!(%remote, error = ?e, "bad message header");
                            peer.handle_frame_error(&head, e);
                            if e.is_fatal() {
                                break;
                            }
                        }
                        Cut::Incomplete => break,
                    }
                    if peer.is_closed() {
                        break;
                    }
                }
                if let Some(b) = batch.take() {
                    wait_for = wait_for.max(shared.store.hand_over(b.finish()));
                }
                // A 3004 costs about a tenth of an answer (docs/benchmarks.md): counted so,
                // a read that shed does not make a request look dearer than it is.
                shared.overload.measured(answered + shed / 10, now.elapsed());
                reports.finish(&shared);
                shared.requests.fetch_add(answered + shed, std::sync::atomic::Ordering::Relaxed);
                if shed > 0 {
                    shared.shed.fetch_add(shed, std::sync::atomic::Ordering::Relaxed);
                    debug!(%remote, shed, "overloaded: requests answered 3004");
                }
                partial_since = if rbuf.is_empty() { None } else { partial_since.or(Some(now)) };
            }
            _ = sleep => {
                let now = Instant::now();
                if partial_deadline.is_some_and(|d| now >= d) {
                    info!(%remote, buffered = rbuf.len(), "closing: message left half sent");
                    break;
                }
                peer.handle_timeout(now);
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                peer.disconnect(Instant::now(), DisconnectCause::Rebooting);
            }
            Some(o) = async {
                match registered.as_mut() {
                    Some(r) => r.rx.recv().await,
                    None => std::future::pending().await,
                }
            }, if peer.is_open() => {
                let (hbh, e2e) = peer.send_request(o.command);
                let (identity, out) = peer.identity_and_transmit();
                (o.write)(identity, out, hbh, e2e);
                if ours.awaiting.len() >= MAX_AWAITING {
                    if let Some(k) = ours.awaiting.keys().next().copied() {
                        ours.awaiting.remove(&k);
                    }
                }
                ours.awaiting.insert(hbh, o.reply);
            }
        }
    }
    if let Some(r) = &registered {
        shared.peers.unregister(r);
    }
    debug!(%remote, "connection closed");
}
