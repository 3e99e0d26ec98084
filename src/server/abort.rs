//! Requests ocfd starts itself (RFC 4006 §5.5): they leave through the connection of the
//! gateway a session came from, found by its Origin-Host, and go through that connection's
//! peer state machine, which matches the answer by Hop-by-Hop: Abort-Session-Request for the
//! open sessions of a node a manager blocked, Re-Auth-Request for those whose reservations no
//! longer fit after a change (or that a manager asks to re-authorise).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use ocf_protocol::Message;
use ocf_protocol::base::LocalIdentity;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// Writes a request with our identity and the Hop-by-Hop and End-to-End identifiers given.
pub type WriteRequest = Box<dyn FnOnce(&LocalIdentity, &mut BytesMut, u32, u32) + Send>;

/// A request for one connection to send: its command, how to write it with the identifiers the
/// peer state machine gives, and where its answer goes.
pub struct Outbound {
    pub command: u32,
    pub write: WriteRequest,
    pub reply: oneshot::Sender<Message>,
}

/// Requests a connection may have queued at once; the sender waits past that.
const QUEUE: usize = 1024;
/// How long an answer to a request we sent is waited for.
const ANSWER_WAIT: Duration = Duration::from_secs(10);
/// Tries of one request before it is left to supervision (reservation expiry).
const TRIES: u32 = 2;
/// DIAMETER_UNKNOWN_SESSION_ID in an RAA or ASA: the gateway has no such session.
const UNKNOWN_SESSION_ID: u32 = 5002;
/// Gateways behind relays remembered at most (past it the table starts again: they are
/// learned again from their next requests).
const MAX_LEARNED: usize = 65536;
/// Requests of one storm (a block, a re-authorisation) awaiting answers at once.
const IN_FLIGHT: usize = 256;

struct Entry {
    id: u64,
    realm: String,
    tx: mpsc::Sender<Outbound>,
}

/// Open connections by their peer's Origin-Host (the newest, if a host has several), and the
/// gateways reached through a relay (a cluster's standby): learned from their requests, whose
/// Origin-Host is not the peer's that brought them (RFC 6733 §6.1.8).
#[derive(Default)]
pub struct Peers {
    by_host: Mutex<HashMap<String, Entry>>,
    next: AtomicU64,
    via: Mutex<HashMap<String, String>>,
}

/// A connection's place in [`Peers`], and the requests for it.
pub struct Registered {
    pub id: u64,
    pub host: String,
    pub rx: mpsc::Receiver<Outbound>,
}

impl Peers {
    /// Registers an open connection to `host` in `realm`.
    pub fn register(&self, host: &str, realm: &str) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUE);
        self.by_host
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                host.to_owned(),
                Entry {
                    id,
                    realm: realm.to_owned(),
                    tx,
                },
            );
        Registered {
            id,
            host: host.to_owned(),
            rx,
        }
    }

    /// Forgets a connection that ended (unless a newer one of its host replaced it).
    pub fn unregister(&self, r: &Registered) {
        let mut m = self.by_host.lock().unwrap_or_else(|p| p.into_inner());
        if m.get(&r.host).is_some_and(|e| e.id == r.id) {
            m.remove(&r.host);
        }
    }

    /// Notes that requests from `host` came through the peer `relay`: requests for `host`
    /// go that way while it is not connected itself.
    pub fn learn(&self, host: &str, relay: &str) {
        let mut via = self.via.lock().unwrap_or_else(|p| p.into_inner());
        if via.get(host).is_none_or(|r| r != relay) {
            if via.len() >= MAX_LEARNED && !via.contains_key(host) {
                via.clear();
            }
            via.insert(host.to_owned(), relay.to_owned());
        }
    }

    /// The way to `host`, if it is connected.
    pub fn sender(&self, host: &str) -> Option<mpsc::Sender<Outbound>> {
        self.route(host).map(|(tx, _)| tx)
    }

    /// The way to `host` (itself, or the relay its requests came through), and its realm, if
    /// connected.
    fn route(&self, host: &str) -> Option<(mpsc::Sender<Outbound>, String)> {
        let by_host = self.by_host.lock().unwrap_or_else(|p| p.into_inner());
        let direct = by_host.get(host);
        let entry = match direct {
            Some(e) => Some(e),
            None => {
                let via = self.via.lock().unwrap_or_else(|p| p.into_inner());
                via.get(host).and_then(|r| by_host.get(r))
            }
        };
        entry.map(|e| (e.tx.clone(), e.realm.clone()))
    }
}

/// How a request we sent ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The gateway answered with this Result-Code.
    Answered(u32),
    /// Its gateway is not connected.
    NotConnected,
    /// No answer in time, after every try.
    NoAnswer,
}

/// What a request for one session is: its command and how to write it to a gateway
/// (`session_id`, destination host and realm).
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Abort,
    ReAuth,
}

/// What follows a request's outcome: a session its gateway does not know is closed here, one
/// its gateway aborted is an event, anything else is logged.
fn after(
    store: &ocf_store::Store,
    path: &str,
    kind: Kind,
    sid: &str,
    host: &str,
    outcome: &Outcome,
) {
    if *outcome == Outcome::Answered(UNKNOWN_SESSION_ID) {
        // The gateway has no such session: it is closed here, what it held returned.
        let closed = store.close_session(
            sid,
            crate::server::clock::unix_now(),
            "unknown at its gateway",
        );
        info!(%path, session_id = %sid, host, ?kind, closed, "the gateway does not know the session: closed here");
    } else if *outcome != Outcome::Answered(2001) {
        warn!(%path, session_id = %sid, host, ?kind, ?outcome, "not taken by the gateway");
    } else if matches!(kind, Kind::Abort) {
        let now = crate::server::clock::unix_now();
        store.event(
            now,
            &serde_json::json!({
                "kind": "session_aborted",
                "tenant": path.split('/').next().unwrap_or_default(),
                "path": path,
                "time": now,
                "session_id": sid,
                "gateway": host,
                "reason": "blocked",
            }),
        );
    }
}

/// Sends ASR or RAR for one session to `host` and waits (bounded, tried again once) for the
/// answer.
pub async fn ask(peers: &Peers, kind: Kind, session_id: &str, host: &str) -> Outcome {
    for _ in 0..TRIES {
        let Some((tx, realm)) = peers.route(host) else {
            return Outcome::NotConnected;
        };
        let (reply, answer) = oneshot::channel();
        let (sid, dest) = (session_id.to_owned(), host.to_owned());
        let (command, write): (u32, WriteRequest) = match kind {
            Kind::Abort => (
                ocf_protocol::codes::command::ABORT_SESSION,
                Box::new(move |identity, out, hbh, e2e| {
                    identity.write_asr(out, hbh, e2e, &sid, &dest, &realm);
                }),
            ),
            Kind::ReAuth => (
                ocf_protocol::codes::command::RE_AUTH,
                Box::new(move |identity, out, hbh, e2e| {
                    identity.write_rar(out, hbh, e2e, &sid, &dest, &realm, None);
                }),
            ),
        };
        let o = Outbound {
            command,
            write,
            reply,
        };
        if tx.send(o).await.is_err() {
            continue;
        }
        if let Ok(Ok(a)) = tokio::time::timeout(ANSWER_WAIT, answer).await {
            let code = a
                .find(ocf_protocol::codes::avp::RESULT_CODE)
                .and_then(|r| r.u32().ok())
                .unwrap_or(0);
            return Outcome::Answered(code);
        }
    }
    Outcome::NoAnswer
}

/// Aborts every open session under `path` (a device or a node a manager blocked). The gateway
/// ends each with a CCR-T, which charges what it used; one that does not (no answer, not
/// connected, an error) keeps getting 4010 for the node, and its reservations return to the
/// pool when they expire.
pub async fn abort_sessions(store: Arc<ocf_store::Store>, peers: Arc<Peers>, path: String) {
    each_session(store, peers, path, Kind::Abort, false).await;
}

/// Re-authorises the open sessions under `path` that hold reservations (RAR): each gateway
/// answers RAA and sends a CCR-U (Reporting-Reason FORCED_REAUTHORISATION), whose grant
/// follows the limits as they are now. `all`: every open session, holding or not (a
/// manager's request).
pub async fn reauth_sessions(
    store: Arc<ocf_store::Store>,
    peers: Arc<Peers>,
    path: String,
    all: bool,
) {
    each_session(store, peers, path, Kind::ReAuth, all).await;
}

async fn each_session(
    store: Arc<ocf_store::Store>,
    peers: Arc<Peers>,
    path: String,
    kind: Kind,
    all: bool,
) {
    let sessions = match store.engine().sessions_under(&path) {
        Ok(s) => s,
        Err(e) => {
            warn!(%path, error = %e, ?kind, "sessions not found");
            return;
        }
    };
    let mut outcomes: HashMap<String, u64> = HashMap::new();
    let mut n = 0;
    // Up to IN_FLIGHT at once: a storm of thousands goes out at the pace the gateways answer,
    // not one round trip after another.
    let mut tasks = tokio::task::JoinSet::new();
    let mut todo = sessions
        .into_iter()
        .filter(|(_, _, holding)| *holding || all || matches!(kind, Kind::Abort));
    loop {
        while tasks.len() < IN_FLIGHT {
            let Some((sid, host, _)) = todo.next() else {
                break;
            };
            n += 1;
            let (store, peers, path) = (store.clone(), peers.clone(), path.clone());
            tasks.spawn(async move {
                let outcome = ask(&peers, kind, &sid, &host).await;
                after(&store, &path, kind, &sid, &host, &outcome);
                outcome
            });
        }
        let Some(done) = tasks.join_next().await else {
            break;
        };
        if let Ok(outcome) = done {
            *outcomes.entry(format!("{outcome:?}")).or_default() += 1;
        }
    }
    if n > 0 {
        info!(%path, sessions = n, ?kind, ?outcomes, "server-initiated requests sent");
    }
}
