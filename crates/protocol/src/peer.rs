//! The peer connection state machine, sans-IO: RFC 6733 §5.6 (capabilities exchange, disconnect)
//! for the responder and the initiator side, with the RFC 3539 §3.4 watchdog.
//!
//! The driver feeds whole frames ([`Peer::handle_frame`]), frame-level errors
//! ([`Peer::handle_frame_error`]) and timeouts ([`Peer::handle_timeout`]) with the current time;
//! it writes out whatever [`Peer::transmit`] holds, sleeps until [`Peer::poll_timeout`], and reads
//! [`Peer::poll_event`]. Nothing here reads a clock or touches a socket.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::base::{LocalIdentity, advertised_applications};
use super::codes::{DisconnectCause, ResultCode, application, avp as c, command};
use super::dictionary::{self, Dictionary};
use super::error::DiameterError;
use super::frame::FrameError;
use super::header::parse_header;
use super::message::Message;

/// RFC 3539 §3.4.1: Tw may not be set below 6 seconds.
pub(crate) const MIN_WATCHDOG: Duration = Duration::from_secs(6);
/// Jitter applied to each watchdog interval, ± (RFC 3539 §3.4.1).
const WATCHDOG_JITTER_MS: u64 = 2000;

/// Settings shared by all connections.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    pub identity: LocalIdentity,
    pub dictionary: Arc<Dictionary>,
    /// Tw, the watchdog interval before jitter.
    pub watchdog: Duration,
    /// How long a new connection may take to complete CER/CEA.
    pub handshake_timeout: Duration,
    /// How long to wait for a DPA after sending DPR.
    pub dpa_timeout: Duration,
    /// If set, only these Origin-Hosts may connect (others get 3010).
    pub allowed_peers: Option<Vec<String>>,
}

/// Which side opened the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Initiator,
    Responder,
}

/// Connection states (RFC 6733 §5.6, one connection per machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Initiator: CER sent, waiting for CEA.
    WaitCea,
    /// Responder: connection accepted, waiting for CER.
    WaitCer,
    Open,
    /// DPR sent, waiting for DPA.
    Closing,
    Closed,
}

/// RFC 3539 §3.4 watchdog states while the connection is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watchdog {
    Okay,
    Suspect,
}

/// Why a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent DPR with this Disconnect-Cause (raw value).
    PeerDisconnected(u32),
    /// We sent DPR and got the DPA.
    Disconnected,
    /// We sent DPR and no DPA came in time.
    DpaTimeout,
    /// The watchdog went from SUSPECT to DOWN.
    WatchdogDown,
    /// CER/CEA did not complete in time.
    HandshakeTimeout,
    /// The capabilities exchange failed with this Result-Code.
    HandshakeFailed(u32),
    /// The byte stream cannot be trusted any more.
    ProtocolError(ResultCode),
}

/// What the upper layer needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Opened {
        origin_host: String,
        origin_realm: String,
    },
    /// A valid application request (for example a CCR), to be answered by the upper layer.
    Request(Message),
    /// An answer to a request sent with [`Peer::send_request`].
    Answer(Message),
    Closed(CloseReason),
}

/// One transport connection's Diameter state.
pub struct Peer {
    config: Arc<PeerConfig>,
    identity: LocalIdentity,
    role: Role,
    state: State,
    watchdog: Watchdog,
    watchdog_pending: bool,
    deadline: Option<Instant>,
    rng: fastrand::Rng,
    next_hop_by_hop: u32,
    next_end_to_end: u32,
    /// Requests we sent and await answers to: (Hop-by-Hop, Command-Code, sent for the caller).
    pending: VecDeque<(u32, u32, bool)>,
    /// Whether the peer named the application the 3GPP way (echoed in CEA).
    vendor_specific: bool,
    remote_host: Option<String>,
    out: BytesMut,
    events: VecDeque<Event>,
    /// What the transport authenticated of the peer (its TLS certificate): a CER whose
    /// Origin-Host it does not vouch for is refused (RFC 6733 §13.1).
    identity_check: Option<IdentityCheck>,
    /// Requests for another host of our realm are handed up too (a relay; a cluster node,
    /// which answers for every node of its cluster), not answered 3002.
    any_host: bool,
}

/// Says whether an Origin-Host is the peer the transport authenticated.
pub type IdentityCheck = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// Bound on requests awaiting answers, so a silent peer cannot grow our memory.
const MAX_PENDING: usize = 65536;

impl Peer {
    /// A connection we accepted: wait for CER.
    pub fn responder(
        config: Arc<PeerConfig>,
        local_addrs: &[IpAddr],
        now: Instant,
        seed: u64,
    ) -> Peer {
        let mut p = Peer::new(config, Role::Responder, local_addrs, seed);
        p.state = State::WaitCer;
        p.deadline = Some(now + p.config.handshake_timeout);
        p
    }

    /// A connection we opened: send CER.
    pub fn initiator(
        config: Arc<PeerConfig>,
        local_addrs: &[IpAddr],
        now: Instant,
        seed: u64,
    ) -> Peer {
        let mut p = Peer::new(config, Role::Initiator, local_addrs, seed);
        p.state = State::WaitCea;
        p.deadline = Some(now + p.config.handshake_timeout);
        let (hbh, e2e) = p.next_ids(command::CAPABILITIES_EXCHANGE);
        p.identity.write_cer(&mut p.out, hbh, e2e);
        p
    }

    /// Hands requests whose Destination-Host names another host of our realm up as well (RFC
    /// 6733 §6.1.4 leaves them to a relay): for a relay, and for a cluster's nodes, each of
    /// which answers for all of them.
    pub fn accept_any_host(&mut self) {
        self.any_host = true;
    }

    /// Refuses (3010) a CER whose Origin-Host `check` does not accept.
    pub fn require_identity(&mut self, check: IdentityCheck) {
        self.identity_check = Some(check);
    }

    /// Takes a reloaded configuration (dictionary, timers, allowed peers) for what follows;
    /// the identity this connection announced in its CER/CEA stays.
    pub fn set_config(&mut self, config: Arc<PeerConfig>) {
        self.config = config;
    }

    fn new(config: Arc<PeerConfig>, role: Role, local_addrs: &[IpAddr], seed: u64) -> Peer {
        let mut identity = config.identity.clone();
        if identity.host_ip_addresses.is_empty() {
            identity.host_ip_addresses = local_addrs.to_vec();
        }
        let mut rng = fastrand::Rng::with_seed(seed);
        let next_hop_by_hop = rng.u32(..);
        // RFC 6733 §3: high 12 bits from the start time, low 20 bits random then incremented.
        let next_end_to_end = (identity.origin_state_id << 20) | rng.u32(..1 << 20);
        Peer {
            config,
            identity,
            role,
            state: State::Closed,
            watchdog: Watchdog::Okay,
            watchdog_pending: false,
            deadline: None,
            rng,
            next_hop_by_hop,
            next_end_to_end,
            pending: VecDeque::new(),
            vendor_specific: false,
            remote_host: None,
            out: BytesMut::with_capacity(4096),
            events: VecDeque::new(),
            identity_check: None,
            any_host: false,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }
    pub fn state(&self) -> State {
        self.state
    }
    pub fn watchdog(&self) -> Watchdog {
        self.watchdog
    }
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }
    /// The peer's Origin-Host once the handshake completed.
    pub fn remote_host(&self) -> Option<&str> {
        self.remote_host.as_deref()
    }
    pub fn identity(&self) -> &LocalIdentity {
        &self.identity
    }

    /// Our identity and the output buffer at once, for writing answers without a copy of the
    /// identity.
    pub fn identity_and_transmit(&mut self) -> (&LocalIdentity, &mut BytesMut) {
        (&self.identity, &mut self.out)
    }

    /// Bytes to send. The driver writes them and clears the buffer (or takes them with
    /// `split()`); answers of one read batch accumulate here for a single write.
    pub fn transmit(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            None
        } else {
            self.deadline
        }
    }

    fn next_ids(&mut self, command_code: u32) -> (u32, u32) {
        self.track(command_code, false)
    }

    fn track(&mut self, command_code: u32, for_caller: bool) -> (u32, u32) {
        let hbh = self.next_hop_by_hop;
        self.next_hop_by_hop = self.next_hop_by_hop.wrapping_add(1);
        let e2e = self.next_end_to_end;
        self.next_end_to_end = (self.next_end_to_end & 0xfff0_0000)
            | (self.next_end_to_end.wrapping_add(1) & 0x000f_ffff);
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back((hbh, command_code, for_caller));
        (hbh, e2e)
    }

    /// Reserves identifiers for an application request the caller writes into
    /// [`Self::transmit`]; its answer comes back as [`Event::Answer`].
    pub fn send_request(&mut self, command_code: u32) -> (u32, u32) {
        self.track(command_code, true)
    }

    fn jittered_tw(&mut self) -> Duration {
        let tw = self.config.watchdog.max(MIN_WATCHDOG);
        let jitter = self.rng.u64(..=2 * WATCHDOG_JITTER_MS);
        tw + Duration::from_millis(jitter) - Duration::from_millis(WATCHDOG_JITTER_MS)
    }

    fn set_watchdog(&mut self, now: Instant) {
        let tw = self.jittered_tw();
        self.deadline = Some(now + tw);
    }

    fn close(&mut self, reason: CloseReason) {
        if self.state != State::Closed {
            self.state = State::Closed;
            self.deadline = None;
            self.events.push_back(Event::Closed(reason));
        }
    }

    /// Starts an orderly disconnect: DPR with `cause`, then wait for DPA (bounded).
    pub fn disconnect(&mut self, now: Instant, cause: DisconnectCause) {
        match self.state {
            State::Open => {
                let (hbh, e2e) = self.next_ids(command::DISCONNECT_PEER);
                self.identity
                    .write_dpr(&mut self.out, hbh, e2e, cause as u32);
                self.state = State::Closing;
                self.deadline = Some(now + self.config.dpa_timeout);
            }
            State::Closing | State::Closed => {}
            State::WaitCea | State::WaitCer => self.close(CloseReason::Disconnected),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.deadline else {
            return;
        };
        if now < deadline {
            return;
        }
        match self.state {
            State::WaitCea | State::WaitCer => self.close(CloseReason::HandshakeTimeout),
            State::Closing => self.close(CloseReason::DpaTimeout),
            State::Closed => {}
            State::Open => match (self.watchdog, self.watchdog_pending) {
                (Watchdog::Okay, false) => {
                    let (hbh, e2e) = self.next_ids(command::DEVICE_WATCHDOG);
                    self.identity.write_dwr(&mut self.out, hbh, e2e);
                    self.watchdog_pending = true;
                    self.set_watchdog(now);
                }
                (Watchdog::Okay, true) => {
                    self.watchdog = Watchdog::Suspect;
                    self.set_watchdog(now);
                }
                (Watchdog::Suspect, _) => self.close(CloseReason::WatchdogDown),
            },
        }
    }

    /// A header that could not be delimited or is of another version: answer if it is a request,
    /// then close if the stream cannot be trusted (RFC 6733 §7.1.5).
    pub fn handle_frame_error(&mut self, head: &[u8], err: FrameError) {
        if let Ok((_, h)) = parse_header(head) {
            if h.flags.is_request() {
                let e = DiameterError::new(err.result_code(), err.reason());
                self.identity
                    .write_error_answer(&mut self.out, &Message::header_only(h), &e);
            }
        }
        if err.is_fatal() {
            self.close(CloseReason::ProtocolError(err.result_code()));
        }
    }

    /// One whole frame from the peer.
    pub fn handle_frame(&mut self, now: Instant, frame: Bytes) {
        if self.state == State::Closed {
            return;
        }
        let msg = match Message::decode(frame) {
            Ok(m) => m,
            Err(fail) => {
                if fail.partial.header.flags.is_request() {
                    self.reject(&fail.partial, &fail.error);
                }
                return;
            }
        };
        // Any message from the peer shows it is alive (RFC 3539 §3.4.1).
        if matches!(self.state, State::Open | State::Closing) {
            self.watchdog = Watchdog::Okay;
            self.watchdog_pending = false;
            if self.state == State::Open {
                self.set_watchdog(now);
            }
        }
        if msg.header.flags.is_request() {
            self.handle_request(now, msg);
        } else {
            self.handle_answer(now, msg);
        }
    }

    /// Answers a request with an error; a failed CER also ends the connection.
    fn reject(&mut self, req: &Message, err: &DiameterError) {
        if req.header.command_code == command::CAPABILITIES_EXCHANGE && self.state == State::WaitCer
        {
            self.identity.write_cea(
                &mut self.out,
                &req.header,
                err.result_code,
                Some(err),
                self.vendor_specific,
            );
            self.close(CloseReason::HandshakeFailed(err.result_code.code()));
        } else {
            self.identity.write_error_answer(&mut self.out, req, err);
            if matches!(self.state, State::WaitCer | State::WaitCea) {
                self.close(CloseReason::ProtocolError(err.result_code));
            }
        }
    }

    fn handle_request(&mut self, now: Instant, msg: Message) {
        let h = msg.header;
        let is_base = h.application_id == application::COMMON_MESSAGES;
        if let Err(e) = dictionary::check_header_bits(&msg) {
            return self.reject(&msg, &e);
        }
        match self.state {
            State::WaitCer => {
                if h.command_code != command::CAPABILITIES_EXCHANGE {
                    let e = DiameterError::new(
                        ResultCode::UnableToComply,
                        "CER expected before anything else",
                    );
                    return self.reject(&msg, &e);
                }
                self.handle_cer(now, &msg);
            }
            State::WaitCea => {
                let e = DiameterError::new(
                    ResultCode::UnableToComply,
                    "capabilities exchange in progress",
                );
                self.reject(&msg, &e);
            }
            State::Open | State::Closing => {
                if !is_base
                    && !self
                        .identity
                        .auth_application_ids
                        .contains(&h.application_id)
                {
                    let e = DiameterError::new(
                        ResultCode::ApplicationUnsupported,
                        "application is not supported",
                    );
                    return self.reject(&msg, &e);
                }
                if let Err(e) = self.config.dictionary.validate(&msg) {
                    return self.reject(&msg, &e);
                }
                match (is_base, h.command_code) {
                    (true, command::DEVICE_WATCHDOG) => self.identity.write_dwa(&mut self.out, &h),
                    (true, command::DISCONNECT_PEER) => {
                        self.identity.write_dpa(&mut self.out, &h);
                        let cause = msg
                            .find(c::DISCONNECT_CAUSE)
                            .and_then(|a| a.u32().ok())
                            .unwrap_or(0);
                        self.close(CloseReason::PeerDisconnected(cause));
                    }
                    (true, command::CAPABILITIES_EXCHANGE) => {
                        let e = DiameterError::new(
                            ResultCode::UnableToComply,
                            "capabilities already exchanged",
                        );
                        self.reject(&msg, &e);
                    }
                    (true, _) => {
                        let e = DiameterError::new(
                            ResultCode::CommandUnsupported,
                            "command is not supported",
                        );
                        self.reject(&msg, &e);
                    }
                    (false, _) if self.state == State::Closing => {
                        // We sent DPR: everything read before it was answered before it; what
                        // comes after is not taken on (the peer may close on our DPR before it
                        // reads an answer), so it goes elsewhere (RFC 6733 §5.4).
                        let e = DiameterError::new(
                            ResultCode::TooBusy,
                            "this server is disconnecting (DPR sent); send it to another",
                        );
                        self.reject(&msg, &e);
                    }
                    (false, _) => {
                        if let Err(e) = self.check_destination(&msg) {
                            return self.reject(&msg, &e);
                        }
                        self.events.push_back(Event::Request(msg));
                    }
                }
            }
            State::Closed => {}
        }
    }

    /// Destination-Realm must be ours (3003) and Destination-Host, if present, us (3002).
    fn check_destination(&self, msg: &Message) -> Result<(), DiameterError> {
        let checks = [
            (
                c::DESTINATION_REALM,
                &self.identity.origin_realm,
                ResultCode::RealmNotServed,
                "Destination-Realm is not served here",
            ),
            (
                c::DESTINATION_HOST,
                &self.identity.origin_host,
                ResultCode::UnableToDeliver,
                "Destination-Host is not this host",
            ),
        ];
        let checks = if self.any_host {
            &checks[..1]
        } else {
            &checks[..]
        };
        for &(code, ours, result, why) in checks {
            if let Some(a) = msg
                .find(code)
                .filter(|a| !a.data.eq_ignore_ascii_case(ours.as_bytes()))
            {
                return Err(DiameterError::new(result, why).with_avp(a.to_bytes()));
            }
        }
        Ok(())
    }

    fn handle_cer(&mut self, now: Instant, msg: &Message) {
        let h = msg.header;
        if let Err(e) = self.config.dictionary.validate(msg) {
            return self.reject(msg, &e);
        }
        let (host, realm) = origin(msg);
        let (apps, vendor_specific) = advertised_applications(msg);
        self.vendor_specific = vendor_specific;
        if let Some(allowed) = &self.config.allowed_peers {
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&host)) {
                let e = DiameterError::new(
                    ResultCode::UnknownPeer,
                    "Origin-Host is not an allowed peer",
                );
                return self.reject(msg, &e);
            }
        }
        if self.identity_check.as_ref().is_some_and(|ok| !ok(&host)) {
            let e = DiameterError::new(
                ResultCode::UnknownPeer,
                "Origin-Host is not a name the peer's TLS certificate is valid for",
            );
            return self.reject(msg, &e);
        }
        let common = apps
            .iter()
            .any(|a| *a == application::RELAY || self.identity.auth_application_ids.contains(a));
        if !common {
            let e = DiameterError::new(
                ResultCode::NoCommonApplication,
                "no common application (credit control is 4)",
            );
            return self.reject(msg, &e);
        }
        let inband: Vec<u32> = msg
            .find_all(c::INBAND_SECURITY_ID)
            .filter_map(|a| a.u32().ok())
            .collect();
        if !inband.is_empty() && !inband.contains(&0) {
            let e = DiameterError::new(
                ResultCode::NoCommonSecurity,
                "in-band TLS is not offered; use a TLS port",
            );
            return self.reject(msg, &e);
        }
        self.identity.write_cea(
            &mut self.out,
            &h,
            ResultCode::Success,
            None,
            vendor_specific,
        );
        self.open(now, host, realm);
    }

    fn open(&mut self, now: Instant, host: String, realm: String) {
        self.state = State::Open;
        self.remote_host = Some(host.clone());
        self.watchdog = Watchdog::Okay;
        self.watchdog_pending = false;
        self.set_watchdog(now);
        self.events.push_back(Event::Opened {
            origin_host: host,
            origin_realm: realm,
        });
    }

    fn handle_answer(&mut self, now: Instant, msg: Message) {
        let h = msg.header;
        let Some(i) = self
            .pending
            .iter()
            .position(|&(hbh, code, _)| hbh == h.hop_by_hop && code == h.command_code)
        else {
            // RFC 6733 §6.2: an answer that matches no pending request is discarded.
            return;
        };
        let for_caller = self.pending.remove(i).is_some_and(|p| p.2);
        if for_caller {
            self.events.push_back(Event::Answer(msg));
            return;
        }
        let result = msg.find(c::RESULT_CODE).and_then(|a| a.u32().ok());
        match (self.state, h.command_code) {
            (State::WaitCea, command::CAPABILITIES_EXCHANGE) => {
                let validated = self.config.dictionary.validate(&msg);
                match (result, validated) {
                    (Some(2001), Ok(())) => {
                        let (host, realm) = origin(&msg);
                        self.open(now, host, realm);
                    }
                    (Some(code), _) if code != 2001 => {
                        self.close(CloseReason::HandshakeFailed(code))
                    }
                    (_, Err(e)) => self.close(CloseReason::HandshakeFailed(e.result_code.code())),
                    (None, Ok(())) => {
                        self.close(CloseReason::HandshakeFailed(ResultCode::MissingAvp.code()))
                    }
                    (Some(code), Ok(())) => self.close(CloseReason::HandshakeFailed(code)),
                }
            }
            (State::Closing, command::DISCONNECT_PEER) => self.close(CloseReason::Disconnected),
            // Our own DWA needs nothing more: receiving it already reset the watchdog.
            _ => {}
        }
    }
}

/// Origin-Host and Origin-Realm of a validated CER or CEA.
fn origin(msg: &Message) -> (String, String) {
    let get = |k| {
        msg.find(k)
            .and_then(|a| a.identity().ok())
            .unwrap_or_default()
            .to_owned()
    };
    (get(c::ORIGIN_HOST), get(c::ORIGIN_REALM))
}

#[cfg(test)]
mod tests;
