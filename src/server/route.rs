//! Which partition a gateway's request belongs to, for a cluster node's router
//! ([`super::relay`]): the partition of the tenant its Subscription-Id is in (by the directory
//! every node reads from the same provisioning, and [`ocf_cluster::lease::partition_of`]), or
//! for a request without one, the partition an earlier request of its session went to. With
//! one partition every request goes to it and nothing is looked up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwap;
use ocf_charging::accounts::Accounts;
use ocf_charging::accounts::tenant::SubscriptionType;
use ocf_cluster::directory::Ids;
use ocf_protocol::codes::{ResultCode, application, avp as code, command};
use ocf_protocol::error::DiameterError;
use ocf_protocol::message::Message;

/// Sessions remembered per generation; two generations are kept, so a session is forgotten
/// after between one and two generations of newer ones (a bound on memory, never on
/// correctness: a request carrying its Subscription-Id is routed without it).
const SESSIONS_PER_GENERATION: usize = 1 << 20;

/// The routing of one node.
pub(super) struct Router {
    partitions: u32,
    /// Every tenant's subscription ids in the provisioning (none with one partition).
    directory: Option<ArcSwap<Accounts>>,
    /// Those given through admin APIs since (`ocf_cluster::directory`): looked up first.
    shared: Arc<RwLock<Ids>>,
    sessions: Mutex<Sessions>,
}

#[derive(Default)]
struct Sessions {
    current: HashMap<Box<[u8]>, u32>,
    older: HashMap<Box<[u8]>, u32>,
}

impl Sessions {
    fn get(&self, id: &[u8]) -> Option<u32> {
        self.current.get(id).or_else(|| self.older.get(id)).copied()
    }

    fn insert(&mut self, id: &[u8], partition: u32) {
        if self.current.len() >= SESSIONS_PER_GENERATION {
            self.older = std::mem::take(&mut self.current);
        }
        self.current.insert(id.into(), partition);
    }

    fn remove(&mut self, id: &[u8]) {
        self.current.remove(id);
        self.older.remove(id);
    }
}

impl Router {
    /// A router over `partitions`, reading subscribers in `shared`, then in `directory`
    /// (needed when there is more than one).
    pub(super) fn new(
        partitions: u32,
        directory: Option<Accounts>,
        shared: Arc<RwLock<Ids>>,
    ) -> Arc<Router> {
        Arc::new(Router {
            partitions: partitions.max(1),
            directory: directory.map(ArcSwap::from_pointee),
            shared,
            sessions: Mutex::default(),
        })
    }

    pub(super) fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Replaces the directory (after a reload of the provisioning).
    pub(super) fn set_directory(&self, directory: Accounts) {
        if let Some(d) = &self.directory {
            d.store(Arc::new(directory));
        }
    }

    /// The partition `req` goes to, or the error this node answers it with.
    pub(super) fn partition(&self, req: &Message) -> Result<u32, DiameterError> {
        if self.partitions == 1 {
            return Ok(0);
        }
        let session = req.session_id().map(|a| a.data);
        let ends = ends_session(req);
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let found = match self.by_subscriber(req) {
            Some(p) => {
                if let (Some(s), false) = (session, ends) {
                    sessions.insert(s, p);
                }
                Some(p)
            }
            None => session.and_then(|s| sessions.get(s)),
        };
        if let (Some(s), true) = (session, ends) {
            sessions.remove(s);
        }
        drop(sessions);
        found.ok_or_else(|| {
            if opens_session(req) {
                DiameterError::new(
                    ResultCode::UserUnknown,
                    "no tenant of the cluster has these Subscription-Ids",
                )
            } else {
                DiameterError::new(
                    ResultCode::UnknownSessionId,
                    "this node does not know the session's partition, and the request names no known Subscription-Id",
                )
            }
        })
    }

    fn by_subscriber(&self, req: &Message) -> Option<u32> {
        let directory = self.directory.as_ref()?.load();
        req.find_all(code::SUBSCRIPTION_ID).find_map(|sub| {
            let mut kind = None;
            let mut data = None;
            for a in sub.children() {
                if a.is(code::SUBSCRIPTION_ID_TYPE) {
                    kind = a.u32().ok();
                } else if a.is(code::SUBSCRIPTION_ID_DATA) {
                    data = a.utf8().ok();
                }
            }
            let (kind, data) = (kind?, data?);
            let shared = self
                .shared
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(kind, data.to_ascii_lowercase()))
                .cloned();
            let tenant = match shared {
                Some(t) => t,
                None => directory.tenant_of(SubscriptionType::from_code(kind)?, data)?,
            };
            Some(ocf_cluster::lease::partition_of(&tenant, self.partitions))
        })
    }
}

/// CC-Request-Type of a credit-control request.
fn request_type(req: &Message) -> Option<u32> {
    let h = &req.header;
    (h.application_id == application::CREDIT_CONTROL && h.command_code == command::CREDIT_CONTROL)
        .then(|| req.find(code::CC_REQUEST_TYPE).and_then(|a| a.u32().ok()))
        .flatten()
}

/// A CCR-I or an EVENT: the subscriber must be known.
fn opens_session(req: &Message) -> bool {
    matches!(request_type(req), Some(1 | 4))
}

/// A CCR-T, an EVENT or an STR: no later request of the session comes.
fn ends_session(req: &Message) -> bool {
    matches!(request_type(req), Some(3 | 4))
        || req.header.command_code == command::SESSION_TERMINATION
}

#[cfg(test)]
mod tests {
    use super::*;
    use ocf_charging::accounts::changes::{Change, Source};
    use ocf_charging::ledger::Ledger;
    use ocf_protocol::avp::Avp;
    use ocf_protocol::header::Header;

    fn directory() -> Accounts {
        let a = Accounts::new(Ledger::new(), Default::default());
        let text = ocf_charging::accounts::provisioning::embedded_text(600);
        a.change(
            &Change::Import {
                sources: vec![Source {
                    name: "t".into(),
                    text,
                }],
            },
            0,
        )
        .unwrap();
        a
    }

    fn ccr(session: &str, kind: u32, msisdn: Option<&str>) -> Message {
        let mut body = bytes::BytesMut::new();
        Avp::new(code::SESSION_ID.code, 0x40, 0, session.as_bytes()).encode(&mut body);
        Avp::new(code::CC_REQUEST_TYPE.code, 0x40, 0, &kind.to_be_bytes()).encode(&mut body);
        if let Some(m) = msisdn {
            let mut sub = bytes::BytesMut::new();
            Avp::new(
                code::SUBSCRIPTION_ID_TYPE.code,
                0x40,
                0,
                &0u32.to_be_bytes(),
            )
            .encode(&mut sub);
            Avp::new(code::SUBSCRIPTION_ID_DATA.code, 0x40, 0, m.as_bytes()).encode(&mut sub);
            Avp::new(code::SUBSCRIPTION_ID.code, 0x40, 0, &sub).encode(&mut body);
        }
        let header = Header::request(command::CREDIT_CONTROL, application::CREDIT_CONTROL, 1, 1);
        let mut f = bytes::BytesMut::new();
        header.write(&mut f, 20 + body.len() as u32);
        f.extend_from_slice(&body);
        Message::decode(f.freeze()).unwrap()
    }

    /// Requests go to their tenant's partition; one without a Subscription-Id follows its
    /// session until the session ends; an unknown subscriber or session is refused.
    #[test]
    fn requests_go_to_their_tenants_partition() {
        let shared = Arc::new(RwLock::new(Ids::new()));
        let r = Router::new(3, Some(directory()), shared.clone());
        let acme = ocf_cluster::lease::partition_of("acme", 3);
        let alice = ocf_cluster::lease::partition_of("alice", 3);
        assert_ne!(acme, alice, "the test needs the two tenants apart");
        assert_eq!(
            r.partition(&ccr("s1", 1, Some("15551000001"))).unwrap(),
            acme
        );
        assert_eq!(
            r.partition(&ccr("s2", 1, Some("15559990001"))).unwrap(),
            alice
        );
        assert_eq!(r.partition(&ccr("s1", 2, None)).unwrap(), acme);
        assert_eq!(r.partition(&ccr("s2", 3, None)).unwrap(), alice);
        let gone = r.partition(&ccr("s2", 2, None)).unwrap_err();
        assert_eq!(gone.result_code, ResultCode::UnknownSessionId);
        let unknown = r.partition(&ccr("s3", 1, Some("4400000"))).unwrap_err();
        assert_eq!(unknown.result_code, ResultCode::UserUnknown);
        // An id given through an admin API (shared) is looked up before the files: a device
        // moved to alice; the others still as the files say.
        shared
            .write()
            .unwrap()
            .insert((0, "15551000002".into()), "alice".into());
        assert_eq!(
            r.partition(&ccr("s4", 1, Some("15551000002"))).unwrap(),
            alice
        );
        assert_eq!(
            r.partition(&ccr("s5", 1, Some("15551000003"))).unwrap(),
            acme
        );
        // One partition: nothing is looked up.
        let one = Router::new(1, None, Arc::default());
        assert_eq!(one.partition(&ccr("s9", 2, None)).unwrap(), 0);
    }

    #[test]
    fn sessions_are_bounded() {
        let mut s = Sessions::default();
        for i in 0..(SESSIONS_PER_GENERATION * 2 + 1) {
            s.insert(&(i as u64).to_be_bytes(), 1);
        }
        assert!(s.current.len() + s.older.len() <= SESSIONS_PER_GENERATION * 2);
        let last = (SESSIONS_PER_GENERATION * 2) as u64;
        assert_eq!(s.get(&last.to_be_bytes()), Some(1));
    }
}
