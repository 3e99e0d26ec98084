//! The load generator: N connections, each driven by one task that pipelines requests, matches
//! answers by Hop-by-Hop Identifier and times them.
//!
//! Open loop: request k of a connection is *intended* at a fixed time (rate, optional linear
//! ramp) and its latency is measured from that time, so a server stall shows up in full
//! instead of slowing the generator down (no coordinated omission). A pacer thread with fine
//! sleeps wakes the connections; tokio's millisecond timer would add up to 1 ms of error.
//! Closed loop: a fixed number of sessions per connection, each with at most one request
//! outstanding.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use ocf_protocol::avp::AvpIter;
use ocf_protocol::codes::{DisconnectCause, ResultCode, avp as c, command};
use ocf_protocol::doic::{self, Olr};
use ocf_protocol::error::DiameterError;
use ocf_protocol::frame;
use ocf_protocol::header::{HEADER_LEN, parse_header};
use ocf_protocol::peer::{CloseReason, Event, Peer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, watch};

use crate::client::{Client, ClientConfig, Stream};
use crate::plan::{Kind, MAX_MSCC, Plan, Scratch, SessionState};
use crate::reacting::{Abatement, Decision, Ocs, Step};
use crate::stats::{PerKind, RunReport, Stats, merged};

/// Largest answer accepted.
const MAX_ANSWER: usize = 1 << 20;
/// Requests generated per pass of a connection's loop at most, and the unwritten output above
/// which none are: the loop keeps reading answers while it writes, so a server that answers
/// only as fast as it can write never deadlocks against us.
const GEN_BATCH: usize = 2048;
const HIGH_WATER: usize = 512 * 1024;
/// How often unanswered requests are checked for retransmission and timeout.
const SCAN_EVERY: Duration = Duration::from_millis(10);

#[derive(Clone, Debug)]
pub enum Transport {
    Tcp,
    /// SCTP, binding these local addresses (multi-homing) if any.
    Sctp(Vec<IpAddr>),
    /// TLS over TCP (RFC 6733 §13), checking the server's certificate for this name.
    Tls(crate::client::TlsClient),
}

#[derive(Clone, Copy, Debug)]
pub enum Model {
    /// Requests per second over all connections.
    Open { rate: f64 },
    /// Sessions per connection, each with one request outstanding at a time.
    Closed { sessions: usize },
}

/// How to run the load.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub server: SocketAddr,
    pub transport: Transport,
    pub client: ClientConfig,
    pub connections: usize,
    pub model: Model,
    /// Linear ramp from zero to the full rate (open) or session count (closed).
    pub ramp: Duration,
    /// Stop after this long ...
    pub duration: Option<Duration>,
    /// ... or after this many requests in all (whichever comes first).
    pub requests: Option<u64>,
    /// Cap on unanswered requests per connection; an open-loop sender waits (and the wait
    /// counts in the latency) rather than pass it.
    pub max_outstanding: usize,
    /// Resend an unanswered request with the T flag after this long.
    pub retransmit: Option<Duration>,
    pub max_retransmits: u32,
    /// Give up on a request after this long (a timeout).
    pub answer_timeout: Duration,
    /// Pacer period in open loop.
    pub tick: Duration,
    /// Print one line per second to stderr.
    pub live: bool,
    /// Act as a DOIC reacting node (RFC 7683, loss algorithm): announce it in every request
    /// and abate what the server's overload reports ask.
    pub doic: bool,
}

/// Receives each second's interval histograms: (offset from the start, length, type, histogram).
pub type IntervalSink<'a> = dyn FnMut(Duration, Duration, Kind, &PerKind) + 'a;

/// Open-loop schedule of one connection: cumulative requests n(t) = r·t²/2T during a ramp of
/// length T, then r·T/2 + r·(t − T).
#[derive(Clone, Copy, Debug)]
struct Pacing {
    t0: Instant,
    rate: f64,
    ramp: f64,
}

impl Pacing {
    /// How many requests are due by `now`.
    fn due(&self, now: Instant) -> u64 {
        let t = now.saturating_duration_since(self.t0).as_secs_f64();
        let n = if t < self.ramp {
            self.rate * t * t / (2.0 * self.ramp)
        } else {
            self.rate * self.ramp / 2.0 + self.rate * (t - self.ramp)
        };
        n as u64 + 1
    }

    /// When request `k` (from 0) is intended.
    fn intended(&self, k: u64) -> Instant {
        let k = k as f64;
        let ramped = self.rate * self.ramp / 2.0;
        let t = if k < ramped {
            (2.0 * self.ramp * k / self.rate).sqrt()
        } else {
            self.ramp + (k - ramped) / self.rate
        };
        self.t0 + Duration::from_secs_f64(t)
    }
}

/// One request awaiting its answer.
struct Slot {
    /// An update the server asked for (RAR).
    forced: bool,
    intended: Instant,
    first_sent: Instant,
    last_sent: Instant,
    session: u32,
    kind: Kind,
    end_to_end: u32,
    retransmits: u32,
}

/// Counts gathered during one pass of a connection's loop, applied to the shared [`Stats`]
/// under one lock.
#[derive(Default)]
struct Batch {
    sent: [u64; 4],
    abated: [u64; 4],
    probes: u64,
    answers: Vec<(Kind, Duration, u32)>,
    retransmits: u64,
    timeouts: u64,
    protocol_errors: u64,
    late: u64,
    last_answer: Option<Instant>,
    /// Server-initiated requests answered, and the updates RARs asked for that were answered.
    rar: u64,
    asr: u64,
    forced_answered: u64,
    first_rar: Option<Instant>,
    last_forced: Option<Instant>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.sent == [0; 4]
            && self.abated == [0; 4]
            && self.answers.is_empty()
            && self.retransmits
                + self.timeouts
                + self.protocol_errors
                + self.late
                + self.probes
                + self.rar
                + self.asr
                + self.forced_answered
                == 0
    }
}

/// What all connections of a run share.
struct RunShared {
    stats: Mutex<Stats>,
    last_answer: Mutex<Option<Instant>>,
    /// With `--doic`: the overload control state, and the OC-Supported-Features every request
    /// ends with (encoded once); without, None and nothing.
    ocs: Option<Ocs>,
    doic_avps: Bytes,
}

impl RunShared {
    fn flush(&self, b: &mut Batch) {
        if b.is_empty() {
            return;
        }
        if let Ok(mut s) = self.stats.lock() {
            for k in Kind::ALL {
                s.kinds[k as usize].sent += b.sent[k as usize];
                s.kinds[k as usize].abated += b.abated[k as usize];
                s.interval[k as usize].abated += b.abated[k as usize];
            }
            s.probes += b.probes;
            for &(kind, lat, rc) in &b.answers {
                s.answered(kind, lat, rc);
            }
            s.retransmits += b.retransmits;
            s.reauth.rar += b.rar;
            s.reauth.asr += b.asr;
            s.reauth.forced_answered += b.forced_answered;
            if let Some(t) = b.first_rar {
                s.reauth.first_rar = Some(s.reauth.first_rar.map_or(t, |x| x.min(t)));
            }
            if let Some(t) = b.last_forced {
                s.reauth.last_forced = Some(s.reauth.last_forced.map_or(t, |x| x.max(t)));
            }
            s.timeouts += b.timeouts;
            s.protocol_errors += b.protocol_errors;
            s.late_answers += b.late;
        }
        if let Some(t) = b.last_answer {
            if let Ok(mut l) = self.last_answer.lock() {
                *l = Some(l.map_or(t, |x| x.max(t)));
            }
        }
        b.sent = [0; 4];
        b.abated = [0; 4];
        (b.rar, b.asr, b.forced_answered, b.first_rar, b.last_forced) = (0, 0, 0, None, None);
        b.probes = 0;
        b.answers.clear();
        b.retransmits = 0;
        b.timeouts = 0;
        b.protocol_errors = 0;
        b.late = 0;
        b.last_answer = None;
    }
}

/// Result-Code and per-MSCC grants of a CCA, read straight from the frame, and its OC-OLR if
/// `want_olr`.
fn read_cca(
    frame: &[u8],
    plan: &Plan,
    granted: &mut [u64; MAX_MSCC],
    want_olr: bool,
) -> (Option<u32>, Option<Olr>) {
    let (mut rc, mut olr) = (None, None);
    *granted = [0; MAX_MSCC];
    let mut next = 0;
    let Some(avps) = frame.get(HEADER_LEN..) else {
        return (None, None);
    };
    for a in AvpIter::new(avps) {
        if a.is(c::RESULT_CODE) {
            rc = a.u32().ok();
        } else if want_olr && a.is(c::OC_OLR) {
            olr = doic::olr(Some(a));
        } else if a.is(c::MULTIPLE_SERVICES_CREDIT_CONTROL) {
            let (mut rg, mut octets) = (None, 0);
            for m in a.children() {
                if m.is(c::RATING_GROUP) {
                    rg = m.u32().ok();
                } else if m.is(c::GRANTED_SERVICE_UNIT) {
                    for g in m.children() {
                        if g.is(c::CC_TOTAL_OCTETS) {
                            octets = g.u64().unwrap_or(0);
                        }
                    }
                }
            }
            let i = rg
                .and_then(|rg| plan.rating_groups.iter().position(|&x| x == rg))
                .unwrap_or(next);
            if let Some(g) = granted.get_mut(i) {
                *g = octets;
            }
            next += 1;
        }
    }
    (rc, olr)
}

/// Why a connection's task ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("connection {0}: {1}")]
    Lost(usize, String),
}

struct Conn {
    id: usize,
    plan: Arc<Plan>,
    cfg: Arc<LoadConfig>,
    shared: Arc<RunShared>,
    destination_realm: String,
    /// Each connection is a peer of its own: its Origin-Host (so that what the server sends
    /// for a session, RAR or ASR, comes back on the connection the session is on).
    origin_host: String,
    session_prefix: String,
    peer: Peer,
    scratch: Scratch,
    sessions: Vec<SessionState>,
    /// Whether each session is to end with its next request.
    ending: Vec<bool>,
    free: Vec<u32>,
    /// Sessions by serial (the end of their Session-Id), to find the one a RAR or ASR names.
    by_serial: std::collections::HashMap<u64, u32>,
    /// Sessions waiting for their next request, by the time it may go.
    ready: VecDeque<(Instant, u32)>,
    /// Unanswered requests; index = Hop-by-Hop − `base_hbh`.
    inflight: VecDeque<Option<Slot>>,
    base_hbh: u32,
    live: usize,
    next_e2e: u32,
    serial: u64,
    /// Requests this connection may still start (`u64::MAX`: no count).
    quota: u64,
    /// First sends so far (open loop: the schedule index).
    sent: u64,
    stopping: bool,
    disconnecting: bool,
    batch: Batch,
    /// Requests this pass may still generate.
    budget: usize,
    abatement: Abatement,
}

impl Conn {
    fn session_count(&self) -> usize {
        self.sessions.len() - self.free.len()
    }

    fn new_session(&mut self) -> u32 {
        let serial = self.serial;
        self.serial += 1;
        let conns = self.cfg.connections as u64;
        let state = SessionState {
            serial,
            subscriber: serial * conns + self.id as u64,
            next_number: 0,
            step: 0,
            granted: [0; MAX_MSCC],
            forced: false,
        };
        let slot = match self.free.last() {
            Some(&i) => i,
            None => self.sessions.len() as u32,
        };
        self.by_serial.insert(serial, slot);
        match self.free.pop() {
            Some(i) => {
                self.sessions[i as usize] = state;
                self.ending[i as usize] = false;
                i
            }
            None => {
                self.sessions.push(state);
                self.ending.push(false);
                (self.sessions.len() - 1) as u32
            }
        }
    }

    fn end_session(&mut self, i: u32) {
        if let Some(s) = self.sessions.get(i as usize) {
            self.by_serial.remove(&s.serial);
        }
        self.free.push(i);
    }

    /// A request the server sent on its own: RAR (answered, and the session's next update goes
    /// at once as FORCED_REAUTHORISATION), ASR (answered, and the session ends with a CCR-T at
    /// once); anything else is refused.
    fn server_request(&mut self, m: &ocf_protocol::Message, now: Instant) {
        let code = m.header.command_code;
        if code != command::RE_AUTH && code != command::ABORT_SESSION {
            return self.refuse(m);
        }
        let sid = m
            .find(c::SESSION_ID)
            .and_then(|a| a.utf8().ok())
            .unwrap_or_default();
        let slot = sid
            .strip_prefix(self.session_prefix.as_str())
            .and_then(|s| s.parse::<u64>().ok())
            .and_then(|serial| self.by_serial.get(&serial).copied());
        let result = if slot.is_some() {
            ResultCode::Success
        } else {
            ResultCode::UnknownSessionId
        };
        let (origin_host, origin_realm) =
            (self.origin_host.clone(), self.plan.origin_realm.clone());
        {
            let out = self.peer.transmit();
            let mut w = ocf_protocol::MessageWriter::new(out, &m.header.answer());
            w.utf8(c::SESSION_ID, sid);
            w.u32(c::RESULT_CODE, result.code());
            w.identity(c::ORIGIN_HOST, &origin_host);
            w.identity(c::ORIGIN_REALM, &origin_realm);
            w.finish();
        }
        if code == command::RE_AUTH {
            self.batch.rar += 1;
            self.batch.first_rar.get_or_insert(now);
        } else {
            self.batch.asr += 1;
        }
        let Some(i) = slot else {
            return;
        };
        if code == command::RE_AUTH {
            self.sessions[i as usize].forced = true;
        } else {
            self.ending[i as usize] = true;
        }
        // Waiting for its think time: it goes now. In flight: it goes once answered.
        if let Some(k) = self.ready.iter().position(|&(_, j)| j == i) {
            self.ready.remove(k);
            self.ready.push_front((now, i));
        }
    }

    fn kind_of(&self, i: u32) -> Kind {
        if self.ending[i as usize] {
            Kind::Termination
        } else {
            self.plan.next_kind(&self.sessions[i as usize])
        }
    }

    fn write(&mut self, i: u32, kind: Kind, hbh: u32, e2e: u32, retransmit: bool) {
        let s = &self.sessions[i as usize];
        self.plan.write_ccr(
            self.peer.transmit(),
            &mut self.scratch,
            &self.destination_realm,
            &self.origin_host,
            &self.session_prefix,
            s,
            kind,
            (hbh, e2e),
            retransmit,
            &self.shared.doic_avps,
        );
    }

    fn send(&mut self, i: u32, intended: Instant, now: Instant) {
        let kind = self.kind_of(i);
        let hbh = self.base_hbh.wrapping_add(self.inflight.len() as u32);
        let e2e = self.next_e2e;
        self.next_e2e = self.next_e2e.wrapping_add(1);
        self.write(i, kind, hbh, e2e, false);
        let forced = kind == Kind::Update && self.sessions[i as usize].forced;
        self.sessions[i as usize].forced = false;
        self.inflight.push_back(Some(Slot {
            forced,
            intended,
            first_sent: now,
            last_sent: now,
            session: i,
            kind,
            end_to_end: e2e,
            retransmits: 0,
        }));
        self.live += 1;
        self.quota = self.quota.saturating_sub(1);
        self.budget = self.budget.saturating_sub(1);
        self.batch.sent[kind as usize] += 1;
    }

    /// Sends session `i`'s next request, unless an overload report in force says to abate it.
    ///
    /// Only what can be left out with the run still consistent is abated: a CCR-I or
    /// CCR-EVENT (the session is not started, as if it had ended at once), and when those
    /// cannot make up the share, a CCR-U, treated as answered locally without a new grant
    /// (a gateway whose Credit-Control-Failure-Handling is CONTINUE): the session goes on to
    /// its next step. Never a CCR-T: the session's reservation must be released.
    fn offer(&mut self, i: u32, intended: Instant, now: Instant) {
        let Some(ocs) = &self.shared.ocs else {
            return self.send(i, intended, now);
        };
        let kind = self.kind_of(i);
        let step = match kind {
            Kind::Initial | Kind::Event => Step::Start,
            Kind::Update => Step::Continue,
            Kind::Termination => Step::End,
        };
        match self.abatement.decide(ocs.reduction(now), step) {
            Decision::Send => self.send(i, intended, now),
            Decision::Probe => {
                self.batch.probes += 1;
                self.send(i, intended, now);
            }
            Decision::Abate => {
                // Counted against --requests and the pass's budget like a request sent.
                self.quota = self.quota.saturating_sub(1);
                self.budget = self.budget.saturating_sub(1);
                self.batch.abated[kind as usize] += 1;
                if kind == Kind::Update {
                    self.sessions[i as usize].step += 1;
                    self.ready.push_back((now + self.plan.think, i));
                } else {
                    self.end_session(i);
                }
            }
        }
    }

    fn pop_done(&mut self) {
        while matches!(self.inflight.front(), Some(None)) {
            self.inflight.pop_front();
            self.base_hbh = self.base_hbh.wrapping_add(1);
        }
    }

    /// The next session to send for: one whose think time is over, else a new one.
    fn next_session(&mut self, now: Instant) -> Option<u32> {
        match self.ready.front() {
            Some(&(at, i)) if at <= now => {
                self.ready.pop_front();
                Some(i)
            }
            _ if self.stopping || self.quota == 0 => None,
            _ => Some(self.new_session()),
        }
    }

    /// Sends whatever the load model says is due.
    fn generate(&mut self, now: Instant, pacing: Option<&Pacing>, window: usize) {
        if self.stopping {
            // Sessions that wait end now.
            while self.budget > 0 {
                let Some((_, i)) = self.ready.pop_front() else {
                    break;
                };
                if self.sessions[i as usize].next_number > 0 {
                    self.ending[i as usize] = true;
                    self.send(i, now, now);
                } else {
                    self.end_session(i);
                }
            }
            return;
        }
        match pacing {
            Some(p) => {
                let due = p.due(now);
                while self.sent < due && self.live < self.cfg.max_outstanding && self.budget > 0 {
                    let Some(i) = self.next_session(now) else {
                        break;
                    };
                    let intended = p.intended(self.sent);
                    self.sent += 1;
                    self.offer(i, intended, now);
                }
            }
            None => {
                while let Some(&(at, i)) = self.ready.front() {
                    if at > now || self.quota == 0 || self.budget == 0 {
                        break;
                    }
                    self.ready.pop_front();
                    self.offer(i, now, now);
                }
                while self.session_count() < window && self.quota > 0 && self.budget > 0 {
                    let i = self.new_session();
                    self.offer(i, now, now);
                }
            }
        }
    }

    fn on_answer(&mut self, frame: &[u8], hbh: u32, now: Instant) {
        let idx = hbh.wrapping_sub(self.base_hbh) as usize;
        let Some(entry) = self.inflight.get_mut(idx) else {
            self.batch.protocol_errors += 1;
            return;
        };
        let Some(slot) = entry.take() else {
            // Timed out already, or the answer to a retransmission that was answered.
            self.batch.late += 1;
            return;
        };
        self.live -= 1;
        let i = slot.session;
        let mut granted = [0u64; MAX_MSCC];
        let (rc, olr) = read_cca(frame, &self.plan, &mut granted, self.shared.ocs.is_some());
        let rc = rc.unwrap_or(0);
        if let (Some(ocs), Some(olr)) = (&self.shared.ocs, olr) {
            ocs.received(&olr, now);
        }
        self.batch
            .answers
            .push((slot.kind, now.saturating_duration_since(slot.intended), rc));
        if slot.forced {
            self.batch.forced_answered += 1;
            self.batch.last_forced = Some(now);
        }
        self.batch.last_answer = Some(now);
        let success = (2000..3000).contains(&rc);
        // 3004 TOO_BUSY charged nothing: a gateway tries the same update or termination again
        // later rather than abandon a session the server still holds.
        let busy = rc == ResultCode::TooBusy.code();
        match slot.kind {
            Kind::Update | Kind::Termination if busy => {
                self.ready.push_back((now + self.plan.think, i));
            }
            Kind::Initial | Kind::Update if success => {
                let s = &mut self.sessions[i as usize];
                s.granted = granted;
                s.next_number += 1;
                s.step += 1;
                if self.stopping || self.ending[i as usize] {
                    self.ending[i as usize] = true;
                    self.send(i, now, now);
                } else if self.sessions[i as usize].forced {
                    // A RAR came while this was in flight.
                    self.ready.push_front((now, i));
                } else {
                    self.ready.push_back((now + self.plan.think, i));
                }
            }
            _ => self.end_session(i),
        }
        self.pop_done();
    }

    /// Retransmits (T flag) and times out unanswered requests.
    fn scan(&mut self, now: Instant) {
        let check_after = match self.cfg.retransmit {
            Some(r) => r.min(self.cfg.answer_timeout),
            None => self.cfg.answer_timeout,
        };
        for idx in 0..self.inflight.len() {
            let Some(slot) = &self.inflight[idx] else {
                continue;
            };
            if now.saturating_duration_since(slot.first_sent) < check_after {
                break;
            }
            let hbh = self.base_hbh.wrapping_add(idx as u32);
            if now.saturating_duration_since(slot.first_sent) >= self.cfg.answer_timeout {
                let i = slot.session;
                self.inflight[idx] = None;
                self.live -= 1;
                self.batch.timeouts += 1;
                self.end_session(i);
                continue;
            }
            let resend = self.cfg.retransmit.is_some_and(|r| {
                now.saturating_duration_since(slot.last_sent) >= r
                    && slot.retransmits < self.cfg.max_retransmits
            });
            if resend {
                let (i, kind, e2e) = (slot.session, slot.kind, slot.end_to_end);
                self.write(i, kind, hbh, e2e, true);
                if let Some(s) = self.inflight[idx].as_mut() {
                    s.retransmits += 1;
                    s.last_sent = now;
                }
                self.batch.retransmits += 1;
            }
        }
        self.pop_done();
    }

    /// Requests from the server (Re-Auth and the like) are not part of a load run: 3001.
    fn refuse(&mut self, msg: &ocf_protocol::Message) {
        let e = DiameterError::new(
            ResultCode::CommandUnsupported,
            "ocf-loadtest answers no server-initiated requests",
        );
        let (identity, out) = self.peer.identity_and_transmit();
        identity.write_error_answer(out, msg, &e);
    }
}

/// Runs one connection until its share of the load is done, then DPR/DPA.
#[allow(clippy::too_many_arguments)]
async fn drive(
    mut conn: Conn,
    stream: Box<dyn Stream>,
    mut rbuf: BytesMut,
    pacing: Option<Pacing>,
    notify: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    window_full: usize,
) -> Result<(), ConnError> {
    let start = Instant::now();
    let mut next_scan = start + SCAN_EVERY;
    let lost = |id: usize, why: String| ConnError::Lost(id, why);
    let (mut rd, mut wr) = tokio::io::split(stream);
    // Written by the select below, a part at a time.
    let mut pending = BytesMut::with_capacity(HIGH_WATER);
    loop {
        conn.budget = if pending.len() < HIGH_WATER {
            GEN_BATCH
        } else {
            0
        };
        let now = Instant::now();
        if !conn.stopping && (*stop.borrow() || conn.quota == 0) {
            conn.stopping = true;
        }
        let window = if conn.cfg.ramp.is_zero() {
            window_full
        } else {
            let f =
                now.saturating_duration_since(start).as_secs_f64() / conn.cfg.ramp.as_secs_f64();
            ((window_full as f64 * f.min(1.0)) as usize).max(1)
        };
        conn.generate(now, pacing.as_ref(), window);
        if now >= next_scan {
            conn.scan(now);
            next_scan = now + SCAN_EVERY;
        }
        if conn.stopping && !conn.disconnecting && conn.live == 0 && conn.ready.is_empty() {
            conn.disconnecting = true;
            conn.peer.disconnect(now, DisconnectCause::Rebooting);
        }
        conn.shared.flush(&mut conn.batch);
        while let Some(ev) = conn.peer.poll_event() {
            match ev {
                Event::Closed(CloseReason::Disconnected) if conn.disconnecting => return Ok(()),
                Event::Closed(r) => {
                    conn.batch.protocol_errors += conn.live as u64 + 1;
                    conn.shared.flush(&mut conn.batch);
                    return Err(lost(conn.id, format!("closed: {r:?}")));
                }
                Event::Request(m) => conn.server_request(&m, now),
                Event::Answer(_) | Event::Opened { .. } => {}
            }
        }
        if !conn.peer.transmit().is_empty() {
            pending.extend_from_slice(conn.peer.transmit());
            conn.peer.transmit().clear();
        }
        let mut wake = next_scan;
        if let Some(t) = conn.peer.poll_timeout() {
            wake = wake.min(t);
        }
        if let (None, Some(&(at, _))) = (&pacing, conn.ready.front()) {
            wake = wake.min(at);
        }
        if pacing.is_none() && !conn.cfg.ramp.is_zero() && window < window_full {
            wake = wake.min(now + SCAN_EVERY);
        }
        rbuf.reserve(64 * 1024);
        tokio::select! {
            w = wr.write(&pending), if !pending.is_empty() => {
                match w {
                    Ok(n) if n > 0 => pending.advance(n),
                    Ok(_) | Err(_) => {
                        conn.batch.protocol_errors += conn.live as u64 + 1;
                        conn.shared.flush(&mut conn.batch);
                        return Err(lost(conn.id, "write failed".into()));
                    }
                }
            }
            n = rd.read_buf(&mut rbuf) => {
                let n = n.map_err(|e| lost(conn.id, format!("read: {e}")))?;
                if n == 0 {
                    conn.batch.protocol_errors += conn.live as u64 + 1;
                    conn.shared.flush(&mut conn.batch);
                    return Err(lost(conn.id, "the server closed the connection".into()));
                }
                let now = Instant::now();
                loop {
                    match frame::check(&rbuf, MAX_ANSWER) {
                        Ok(Some(len)) if rbuf.len() >= len => {
                            let f: Bytes = rbuf.split_to(len).freeze();
                            let is_cca = parse_header(&f).is_ok_and(|(_, h)| {
                                !h.flags.is_request() && h.command_code == command::CREDIT_CONTROL
                            });
                            if is_cca {
                                let hbh = u32::from_be_bytes([f[12], f[13], f[14], f[15]]);
                                conn.on_answer(&f, hbh, now);
                            } else {
                                conn.peer.handle_frame(now, f);
                            }
                        }
                        Ok(_) => break,
                        Err(e) => {
                            conn.batch.protocol_errors += conn.live as u64 + 1;
                            conn.shared.flush(&mut conn.batch);
                            return Err(lost(conn.id, format!("bad frame: {}", e.reason())));
                        }
                    }
                }
            }
            _ = notify.notified(), if pacing.is_some() => {}
            _ = tokio::time::sleep_until(wake.into()) => {
                conn.peer.handle_timeout(Instant::now());
            }
            _ = stop.changed(), if !conn.stopping => {}
        }
    }
}

/// Lets this thread's sleeps end within a microsecond or so of their deadline (Linux keeps
/// 50 µs of slack by default), without `unsafe`.
fn fine_timer_slack() {
    let _ = std::fs::write("/proc/thread-self/timerslack_ns", "1000");
}

/// The Origin-Host of connection `id`: the configured one for the first, `c<id>.` before it for
/// the others (each connection is a Diameter peer of its own).
fn connection_host(host: &str, id: usize) -> String {
    if id == 0 {
        host.to_owned()
    } else {
        format!("c{id}.{host}")
    }
}

/// Opens the connections (CER/CEA each), runs the load, drains and disconnects.
pub async fn run_once(
    cfg: Arc<LoadConfig>,
    plan: Arc<Plan>,
    run: u32,
    sink: Option<&mut IntervalSink<'_>>,
) -> Result<RunReport, Box<dyn std::error::Error + Send + Sync>> {
    let mut opened = Vec::with_capacity(cfg.connections);
    for id in 0..cfg.connections {
        let mut client_cfg = cfg.client.clone();
        client_cfg.origin_host = connection_host(&cfg.client.origin_host, id);
        let client = match &cfg.transport {
            Transport::Tcp => Client::connect_tcp(cfg.server, &client_cfg).await?,
            Transport::Sctp(local) => Client::connect_sctp(cfg.server, local, &client_cfg).await?,
            Transport::Tls(tls) => Client::connect_tls(cfg.server, tls, &client_cfg).await?,
        };
        opened.push(client);
    }
    let shared = Arc::new(RunShared {
        stats: Mutex::new(Stats::default()),
        last_answer: Mutex::new(None),
        ocs: cfg.doic.then(|| Ocs::new(Instant::now())),
        doic_avps: if cfg.doic {
            doic::encode(doic::OLR_DEFAULT_ALGO, None).freeze()
        } else {
            Bytes::new()
        },
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let t0 = Instant::now() + Duration::from_millis(1);
    // Session-Ids unique across runs and processes, even two started within one second (the
    // server keeps ended sessions' answers for a while: a reused id would be refused).
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
        .wrapping_mul(1000)
        .wrapping_add(u64::from(std::process::id() % 1000));
    let n = cfg.connections as u64;
    let mut tasks = Vec::new();
    let mut notifies = Vec::new();
    for (id, client) in opened.into_iter().enumerate() {
        let destination_realm = plan
            .destination_realm
            .clone()
            .unwrap_or_else(|| client.server_realm.clone());
        let (stream, peer, rbuf) = client.into_parts();
        let quota = match cfg.requests {
            Some(total) => total / n + u64::from((id as u64) < total % n),
            None => u64::MAX,
        };
        let (pacing, window) = match cfg.model {
            Model::Open { rate } => (
                Some(Pacing {
                    t0,
                    rate: rate / n as f64,
                    ramp: cfg.ramp.as_secs_f64(),
                }),
                0,
            ),
            Model::Closed { sessions } => (None, sessions),
        };
        let conn = Conn {
            id,
            plan: plan.clone(),
            cfg: cfg.clone(),
            shared: shared.clone(),
            destination_realm,
            origin_host: connection_host(&plan.origin_host, id),
            session_prefix: format!("{};{nonce};{run}.{id};", plan.origin_host),
            peer,
            scratch: Scratch::default(),
            sessions: Vec::new(),
            ending: Vec::new(),
            free: Vec::new(),
            by_serial: std::collections::HashMap::new(),
            ready: VecDeque::new(),
            inflight: VecDeque::new(),
            base_hbh: fastrand::u32(..),
            live: 0,
            next_e2e: fastrand::u32(..),
            serial: 0,
            quota,
            sent: 0,
            stopping: false,
            disconnecting: false,
            batch: Batch::default(),
            budget: 0,
            abatement: Abatement::default(),
        };
        let notify = Arc::new(Notify::new());
        notifies.push(notify.clone());
        tasks.push(tokio::spawn(drive(
            conn,
            stream,
            rbuf,
            pacing,
            notify,
            stop_rx.clone(),
            window,
        )));
    }
    let pacer_stop = Arc::new(AtomicBool::new(false));
    let pacer = matches!(cfg.model, Model::Open { .. }).then(|| {
        let stop = pacer_stop.clone();
        let tick = cfg.tick;
        std::thread::spawn(move || {
            fine_timer_slack();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                for n in &notifies {
                    n.notify_one();
                }
            }
        })
    });

    // Report each second until the duration is over and every connection has finished.
    let mut sink = sink;
    let end = cfg.duration.map(|d| t0 + d);
    let mut last = t0;
    let mut second = 0u64;
    let drain_limit = cfg.answer_timeout + cfg.client.timeout + Duration::from_secs(5);
    let mut hard_end: Option<Instant> = None;
    let mut interval: [PerKind; 4] = Default::default();
    loop {
        let all_done = tasks.iter().all(|t| t.is_finished());
        let now = Instant::now();
        let mut next = last + Duration::from_secs(1);
        if let Some(e) = end {
            if now >= e && hard_end.is_none() {
                let _ = stop_tx.send(true);
                hard_end = Some(now + drain_limit);
            }
            if hard_end.is_none() {
                next = next.min(e);
            }
        }
        if hard_end.is_none() && cfg.duration.is_none() {
            hard_end = Some(now + Duration::from_secs(24 * 3600));
        }
        if now >= last + Duration::from_secs(1) || all_done {
            second += 1;
            // Only a swap under the lock: the connections flush into it.
            let (out, errs) = match shared.stats.lock() {
                Ok(mut s) => {
                    s.swap_interval(&mut interval);
                    (
                        s.outstanding(),
                        s.timeouts + s.protocol_errors + s.failed_answers(),
                    )
                }
                Err(_) => (0, 0),
            };
            if cfg.live {
                let h = merged(&interval);
                let secs = now.saturating_duration_since(last).as_secs_f64().max(1e-3);
                let abated = match &shared.ocs {
                    Some(o) => format!(
                        "  abated {}  reduction {}%",
                        interval.iter().map(|k| k.abated).sum::<u64>(),
                        o.reduction(now)
                    ),
                    None => String::new(),
                };
                eprintln!(
                    "{second:>4}s {:>9.0} answers/s  p50 {:>8.1} µs  p99 {:>8.1} µs  errors {errs}  outstanding {out}{abated}",
                    h.len() as f64 / secs,
                    h.value_at_quantile(0.5) as f64 / 1000.0,
                    h.value_at_quantile(0.99) as f64 / 1000.0,
                );
            }
            if let Some(sink) = sink.as_mut() {
                for k in Kind::ALL {
                    let pk = &interval[k as usize];
                    if pk.answers > 0 {
                        sink(
                            last.saturating_duration_since(t0),
                            now.saturating_duration_since(last),
                            k,
                            pk,
                        );
                    }
                }
            }
            for pk in &mut interval {
                pk.answers = 0;
                pk.sent = 0;
                pk.abated = 0;
                pk.latency.reset();
                pk.result_codes.clear();
            }
            last = now;
        }
        if all_done {
            break;
        }
        if hard_end.is_some_and(|h| now >= h) {
            for t in &tasks {
                t.abort();
            }
            break;
        }
        let wait = next.saturating_duration_since(Instant::now());
        tokio::time::sleep(wait.min(Duration::from_millis(50))).await;
    }
    pacer_stop.store(true, Ordering::Relaxed);
    if let Some(p) = pacer {
        let _ = p.join();
    }
    let mut failures = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e.to_string()),
            Err(e) if e.is_cancelled() => failures.push("drain timed out".into()),
            Err(e) => failures.push(e.to_string()),
        }
    }
    let stats = shared.stats.lock().map(|s| s.clone()).unwrap_or_default();
    let last_answer = shared.last_answer.lock().ok().and_then(|l| *l);
    let duration = last_answer.unwrap_or(last).saturating_duration_since(t0);
    let mut report = RunReport::new(&stats, duration);
    report.connection_failures = failures;
    if let Some(ocs) = &shared.ocs {
        report.doic = true;
        (report.olrs_accepted, report.last_reduction_percentage) = ocs.accepted();
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_olr_of_an_answer_is_read_only_when_wanted() {
        use ocf_protocol::{Header, MessageWriter};
        let plan = Plan {
            origin_host: "lt".into(),
            origin_realm: "r".into(),
            destination_realm: None,
            destination_host: None,
            service_context_id: String::new(),
            auth_application_id: 4,
            scenario: crate::plan::Scenario::Event,
            rating_groups: vec![10],
            requested_octets: 1,
            subscribers: crate::plan::Subscribers::range(1, 1),
            think: Duration::ZERO,
            attributes: Default::default(),
        };
        let report = Olr {
            sequence: 5,
            report_type: doic::HOST_REPORT,
            reduction: 30,
            validity_s: 10,
        };
        let mut cca = BytesMut::new();
        let mut w = MessageWriter::new(&mut cca, &Header::request(272, 4, 1, 2));
        w.u32(c::RESULT_CODE, 3004);
        w.finish();
        assert!(doic::append(
            &mut cca,
            0,
            &doic::encode(doic::OLR_DEFAULT_ALGO, Some(&report))
        ));
        let mut granted = [0; MAX_MSCC];
        assert_eq!(
            read_cca(&cca, &plan, &mut granted, true),
            (Some(3004), Some(report))
        );
        assert_eq!(
            read_cca(&cca, &plan, &mut granted, false),
            (Some(3004), None)
        );
        assert_eq!(
            read_cca(&cca[..10], &plan, &mut granted, true),
            (None, None)
        );
    }

    #[test]
    fn pacing_inverts_its_schedule() {
        let t0 = Instant::now();
        for ramp in [0.0, 2.0] {
            let p = Pacing {
                t0,
                rate: 1000.0,
                ramp,
            };
            for k in [0u64, 1, 10, 999, 1000, 5000] {
                let at = p.intended(k);
                assert_eq!(
                    p.due(at + Duration::from_nanos(100)),
                    k + 1,
                    "ramp {ramp} k {k}"
                );
            }
        }
        let p = Pacing {
            t0,
            rate: 1000.0,
            ramp: 0.0,
        };
        assert_eq!(p.due(t0 + Duration::from_secs(3)), 3001);
    }
}
