//! Sy (3GPP TS 29.219) as the OCS side towards a PCRF, so that it can throttle a subscriber
//! instead of the gateway cutting it off. A Spending-Limit-Request names a subscriber (its
//! Subscription-Id) and the policy counters it wants (none: all); the answer reports each
//! counter's status. The subscription lasts until the PCRF's Session-Termination-Request;
//! meanwhile a change of status is sent as a Spending-Status-Notification-Request, looked at
//! once a second. Subscriptions live in memory: a PCRF subscribes again after a restart (its
//! next SLR, or the SNR it gets answered 5002).
//!
//! A policy counter is a limit on the subscriber's path, named `<node path>:<unit>:<period>`
//! (`acme/iot:octets:month`); its status comes from the levels every account has
//! (`charging.device_thresholds`): `normal` below the first, `warn-<p>` from level p, and
//! `exhausted` at the limit.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use ocf_charging::accounts::tenant::SubscriptionType;
use ocf_charging::ledger::{AccountRef, Level};
use ocf_protocol::MessageWriter;
use ocf_protocol::base::LocalIdentity;
use ocf_protocol::codes::{ResultCode, application, avp as c, command};
use ocf_protocol::error::DiameterError;
use ocf_protocol::message::Message;
use tracing::{info, warn};

use super::abort::{Outbound, Peers};
use super::clock::unix_now;

/// Subscriptions kept at most; past it an SLR for a new one is refused 3004.
const MAX_SUBSCRIPTIONS: usize = 100_000;
/// DIAMETER_ERROR_USER_UNKNOWN (TS 29.219 §5.5.3), an Experimental-Result of 3GPP.
const USER_UNKNOWN: u32 = 5030;

struct Subscription {
    account: AccountRef,
    /// The PCRF's Origin-Host and Origin-Realm, where notifications go.
    host: String,
    realm: String,
    /// The counters it asked for (empty: all).
    wanted: Vec<String>,
    /// What it was last told.
    told: BTreeMap<String, String>,
}

/// The Sy subscriptions of the PCRFs.
#[derive(Default)]
pub struct Sy {
    subscriptions: Mutex<HashMap<String, Subscription>>,
}

/// The status of each policy counter on `account`'s path, by identifier.
fn statuses(store: &ocf_store::Store, account: AccountRef) -> BTreeMap<String, String> {
    let now = unix_now();
    let mut out = BTreeMap::new();
    let Some(t) = store.engine().accounts().ledger().lock(account.tree) else {
        return out;
    };
    let mut node = Some(account.node);
    while let Some(n) = node {
        let Some(nd) = t.nodes.get(n as usize) else {
            break;
        };
        let path = t.names(n).join("/");
        for k in &nd.counters {
            let used = if now >= k.period_end { 0 } else { k.used };
            let status = if Level::Percent(100).reached(used, k.limit) {
                "exhausted".to_owned()
            } else {
                t.default_levels
                    .iter()
                    .filter_map(|l| match l {
                        Level::Percent(p) if *p < 100 && l.reached(used, k.limit) => Some(*p),
                        _ => None,
                    })
                    .max()
                    .map_or_else(|| "normal".to_owned(), |p| format!("warn-{p}"))
            };
            let unit = format!("{:?}", k.unit).to_lowercase();
            let period = format!("{:?}", k.period).to_lowercase();
            out.insert(format!("{path}:{unit}:{period}"), status);
        }
        node = nd.parent;
    }
    out
}

/// What of `all` a subscription reports: the counters it asked for that exist (all if none).
fn reported(all: &BTreeMap<String, String>, wanted: &[String]) -> BTreeMap<String, String> {
    all.iter()
        .filter(|(k, _)| wanted.is_empty() || wanted.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl Sy {
    /// Answers an Sy request: SLR with the counters' statuses, STR ending the subscription.
    pub fn answer(
        &self,
        store: &ocf_store::Store,
        identity: &LocalIdentity,
        out: &mut BytesMut,
        req: &Message,
    ) {
        let sid = req
            .find(c::SESSION_ID)
            .and_then(|a| a.utf8().ok())
            .unwrap_or_default()
            .to_owned();
        match req.header.command_code {
            command::SPENDING_LIMIT => self.spending_limit(store, identity, out, req, sid),
            command::SESSION_TERMINATION => {
                let known = self
                    .subscriptions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&sid)
                    .is_some();
                let code = if known {
                    ResultCode::Success
                } else {
                    ResultCode::UnknownSessionId
                };
                let mut w = MessageWriter::new(out, &req.header.answer());
                w.utf8(c::SESSION_ID, &sid);
                w.u32(c::RESULT_CODE, code.code());
                w.identity(c::ORIGIN_HOST, &identity.origin_host);
                w.identity(c::ORIGIN_REALM, &identity.origin_realm);
                w.finish();
            }
            _ => identity.write_error_answer(
                out,
                req,
                &DiameterError::new(
                    ResultCode::CommandUnsupported,
                    "command is not supported in Sy",
                ),
            ),
        }
    }

    fn spending_limit(
        &self,
        store: &ocf_store::Store,
        identity: &LocalIdentity,
        out: &mut BytesMut,
        req: &Message,
        sid: String,
    ) {
        let account = req
            .avps()
            .filter(|a| a.is(c::SUBSCRIPTION_ID))
            .find_map(|s| {
                let kind = s
                    .children()
                    .find(|a| a.is(c::SUBSCRIPTION_ID_TYPE))
                    .and_then(|a| a.u32().ok())
                    .and_then(SubscriptionType::from_code)?;
                let data = s
                    .children()
                    .find(|a| a.is(c::SUBSCRIPTION_ID_DATA))
                    .and_then(|a| a.utf8().ok())?;
                store.engine().accounts().directory().lookup(kind, data)
            });
        let wanted: Vec<String> = req
            .avps()
            .filter(|a| a.is(c::POLICY_COUNTER_IDENTIFIER))
            .filter_map(|a| a.utf8().ok().map(str::to_owned))
            .collect();
        let origin = |k| {
            req.find(k)
                .and_then(|a| a.identity().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let mut w = MessageWriter::new(out, &req.header.answer());
        w.utf8(c::SESSION_ID, &sid);
        w.u32(c::AUTH_APPLICATION_ID, application::SY);
        w.identity(c::ORIGIN_HOST, &identity.origin_host);
        w.identity(c::ORIGIN_REALM, &identity.origin_realm);
        let Some(account) = account else {
            let g = w.begin_group(c::EXPERIMENTAL_RESULT);
            w.u32(c::VENDOR_ID, ocf_protocol::codes::VENDOR_3GPP);
            w.u32(c::EXPERIMENTAL_RESULT_CODE, USER_UNKNOWN);
            w.end_group(g);
            w.finish();
            return;
        };
        let mut subs = self.subscriptions.lock().unwrap_or_else(|p| p.into_inner());
        if subs.len() >= MAX_SUBSCRIPTIONS && !subs.contains_key(&sid) {
            w.u32(c::RESULT_CODE, ResultCode::TooBusy.code());
            w.finish();
            return;
        }
        let reports = reported(&statuses(store, account), &wanted);
        w.u32(c::RESULT_CODE, ResultCode::Success.code());
        ocf_protocol::base::write_policy_counter_reports(
            &mut w,
            reports.iter().map(|(i, s)| (i.as_str(), s.as_str())),
        );
        w.finish();
        subs.insert(
            sid,
            Subscription {
                account,
                host: origin(c::ORIGIN_HOST),
                realm: origin(c::ORIGIN_REALM),
                wanted,
                told: reports,
            },
        );
    }

    /// Sends a Spending-Status-Notification for each subscription whose counters changed
    /// since it was last told (the supervision tick calls this once a second).
    pub async fn notify(self: Arc<Self>, store: Arc<ocf_store::Store>, peers: Arc<Peers>) {
        let changed: Vec<(String, String, String, BTreeMap<String, String>)> = {
            let mut subs = self.subscriptions.lock().unwrap_or_else(|p| p.into_inner());
            subs.iter_mut()
                .filter_map(|(sid, s)| {
                    let now = reported(&statuses(&store, s.account), &s.wanted);
                    let diff: BTreeMap<String, String> = now
                        .iter()
                        .filter(|(k, v)| s.told.get(*k) != Some(v))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    if diff.is_empty() {
                        return None;
                    }
                    s.told = now;
                    Some((sid.clone(), s.host.clone(), s.realm.clone(), diff))
                })
                .collect()
        };
        for (sid, host, realm, diff) in changed {
            let Some(tx) = peers.sender(&host) else {
                warn!(session_id = %sid, %host, "Sy: the PCRF is not connected; status change not sent");
                continue;
            };
            let (reply, answer) = tokio::sync::oneshot::channel();
            let (s2, h2) = (sid.clone(), host.clone());
            let o = Outbound {
                command: command::SPENDING_STATUS_NOTIFICATION,
                write: Box::new(move |identity, out, hbh, e2e| {
                    let reports: Vec<(String, String)> = diff.into_iter().collect();
                    identity.write_snr(out, hbh, e2e, &s2, &h2, &realm, &reports);
                }),
                reply,
            };
            if tx.send(o).await.is_err() {
                continue;
            }
            let sy = self.clone();
            tokio::spawn(async move {
                let code = tokio::time::timeout(std::time::Duration::from_secs(10), answer)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .and_then(|a| a.find(c::RESULT_CODE).and_then(|r| r.u32().ok()));
                match code {
                    Some(2001) => {}
                    Some(5002) => {
                        // The PCRF no longer knows it: the subscription ends here too.
                        sy.subscriptions
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&sid);
                        info!(session_id = %sid, "Sy: the PCRF ended the subscription (5002)");
                    }
                    other => warn!(session_id = %sid, ?other, "Sy: status notification not taken"),
                }
            });
        }
    }
}
