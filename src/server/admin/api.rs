//! The admin API, version 1 (`docs/admin-api.yaml`): JSON in and out. Every change goes
//! through [`Engine::change`]: checked whole, logged to the change log (synced) and then made,
//! so it survives a restart and a refused one leaves nothing behind. Errors are
//! `{"error": reason}` with 400 (bad request), 404 (no such tenant or node), 409 (clashes
//! with the tree as it is) or 503 (the change log cannot be written).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::server::dispatch::unix_now;
use ocf_charging::accounts::changes::{Change, ChangeError};
use ocf_charging::accounts::provisioning::{
    Amount, AtLimitSpec, LimitSpec, PolicySpec, ThresholdSpec,
};
use ocf_charging::accounts::views::{NodeUsage, Page};
use ocf_charging::ledger::{Period, Unit};

use super::{AdminState, ApiError};

pub(super) fn error(e: ChangeError) -> ApiError {
    let status = match e {
        ChangeError::Invalid(_) => StatusCode::BAD_REQUEST,
        ChangeError::NotFound(_) => StatusCode::NOT_FOUND,
        ChangeError::Conflict(_) => StatusCode::CONFLICT,
        ChangeError::Log(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError(status, e.to_string())
}

/// Runs admin work (building a view and its JSON, or making a change) on the blocking pool,
/// never on the workers that serve gateways, and no more than `admin.max_concurrent` at once:
/// the rest wait their turn without taking a thread.
pub(super) async fn off_workers<T: Send + 'static>(
    state: &AdminState,
    f: impl FnOnce(&ocf_store::Store) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let _turn = state
        .permits
        .acquire()
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// A view built and serialised off the workers.
async fn view<V: Serialize>(
    state: &AdminState,
    f: impl FnOnce(&ocf_charging::Engine) -> Result<V, ChangeError> + Send + 'static,
) -> Result<Response, ApiError> {
    let body = off_workers(state, move |e| {
        f(e.engine()).map(|v| serde_json::to_vec(&v).unwrap_or_default())
    })
    .await?
    .map_err(error)?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// Makes a change, then answers with the node at `path` as it is now.
async fn changed_node(
    state: &AdminState,
    c: Change,
    path: &str,
    status: StatusCode,
) -> Result<Response, ApiError> {
    change(state, c).await?;
    let path = path.to_owned();
    let mut r = view(state, move |e| e.accounts().node_view(&path, unix_now())).await?;
    *r.status_mut() = status;
    Ok(r)
}

/// A body that is not the JSON expected: 400 with what was wrong.
fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(t)| t)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))
}

/// A path parameter that did not decode (not UTF-8): 400 with what was wrong.
pub(super) fn path_param(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(p)| p)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))
}

/// Makes a change off the async workers (it syncs the change log).
async fn change(state: &AdminState, c: Change) -> Result<(), ApiError> {
    if let Some(cluster) = &state.cluster {
        cluster.admit(&c).await?;
    }
    let by = super::caller::caller_name();
    off_workers(state, move |e| e.change_by(&c, unix_now(), by.as_deref()))
        .await?
        .map(|_| ())
        .map_err(error)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    policy: PolicySpec,
    #[serde(default)]
    limits: Vec<LimitSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNode {
    #[serde(default)]
    limits: Vec<LimitSpec>,
    msisdn: Option<String>,
    imsi: Option<String>,
    nai: Option<String>,
    sip_uri: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ids {
    msisdn: Option<String>,
    imsi: Option<String>,
    nai: Option<String>,
    sip_uri: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    limits: Vec<LimitSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Move {
    from: String,
    to: String,
    unit: Unit,
    #[serde(default = "month")]
    period: Period,
    amount: Amount,
    /// Between the service allowances of this class (none: the general limits).
    #[serde(default)]
    class: Option<String>,
}

fn month() -> Period {
    Period::Month
}

#[derive(Debug, Serialize)]
struct Moved {
    from: NodeUsage,
    to: NodeUsage,
}

async fn tenants(State(s): State<AdminState>) -> Result<Response, ApiError> {
    view(&s, |e| Ok(e.accounts().tenants())).await
}

async fn add_tenant(
    State(s): State<AdminState>,
    b: Result<Json<NewTenant>, JsonRejection>,
) -> Result<Response, ApiError> {
    let t = body(b)?;
    let name = t.name.clone();
    changed_node(
        &s,
        Change::AddTenant {
            name: t.name,
            time_zone: t.time_zone,
            policy: t.policy,
            limits: t.limits,
        },
        &name,
        StatusCode::CREATED,
    )
    .await
}

/// `?offset=&limit=`: a page of a node's children (all of them without).
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PageQuery {
    offset: Option<u32>,
    limit: Option<u32>,
}

impl PageQuery {
    pub(super) fn page(q: Result<Query<PageQuery>, QueryRejection>) -> Result<Page, ApiError> {
        let Query(q) = q.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
        Ok(Page {
            offset: q.offset.map_or(0, |o| o as usize),
            limit: q.limit.map_or(usize::MAX, |l| l as usize),
        })
    }
}

async fn node(
    State(s): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let path = path_param(path)?;
    let page = PageQuery::page(q)?;
    view(&s, move |e| e.accounts().node_page(&path, unix_now(), page)).await
}

async fn add_node(
    State(s): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
    b: Result<Json<NewNode>, JsonRejection>,
) -> Result<Response, ApiError> {
    let path = path_param(path)?;
    let n = body(b)?;
    changed_node(
        &s,
        Change::AddNode {
            path: path.clone(),
            limits: n.limits,
            msisdn: n.msisdn,
            imsi: n.imsi,
            nai: n.nai,
            sip_uri: n.sip_uri,
        },
        &path,
        StatusCode::CREATED,
    )
    .await
}

async fn remove_node(
    State(s): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let path = path_param(path)?;
    change(&s, Change::Remove { path }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Thresholds {
    thresholds: Vec<ThresholdSpec>,
}

async fn set_thresholds(
    State(s): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
    b: Result<Json<Thresholds>, JsonRejection>,
) -> Result<Response, ApiError> {
    let path = path_param(path)?;
    let t = body(b)?;
    changed_node(
        &s,
        Change::SetThresholds {
            path: path.clone(),
            thresholds: t.thresholds,
        },
        &path,
        StatusCode::OK,
    )
    .await
}

/// `PUT /v1/at-limit/{path}` sets a node's own policy at its limit, `DELETE` clears it;
/// the node as it is now. What gateways hold was granted under the old one: they
/// re-authorise.
async fn set_at_limit(
    State(s): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
    b: Result<Json<AtLimitSpec>, JsonRejection>,
) -> Result<Response, ApiError> {
    let path = path_param(path)?;
    let spec = body(b)?;
    at_limit_change(s, path, Some(spec)).await
}

async fn clear_at_limit(
    State(s): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let path = path_param(path)?;
    at_limit_change(s, path, None).await
}

async fn at_limit_change(
    s: AdminState,
    path: String,
    at_limit: Option<AtLimitSpec>,
) -> Result<Response, ApiError> {
    let change = Change::SetAtLimit {
        path: path.clone(),
        at_limit,
    };
    let r = changed_node(&s, change, &path, StatusCode::OK).await?;
    tokio::spawn(crate::server::abort::reauth_sessions(
        s.store.clone(),
        s.peers.clone(),
        path,
        false,
    ));
    Ok(r)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rules {
    rules: Vec<ocf_charging::rules::RuleSpec>,
}

/// `GET /v1/rules/{path}`: the node's rules, its personal account and what it inherits.
async fn rules(
    State(s): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let path = path_param(path)?;
    view(&s, move |e| e.accounts().rules_view(&path)).await
}

/// `PUT /v1/rules/{path}` sets a node's rules (all or none of them), `DELETE` clears them;
/// the rules as they are now. Gateways holding units under the node re-authorise, so what
/// they use next is charged by the new rules.
async fn set_rules(
    State(s): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
    b: Result<Json<Rules>, JsonRejection>,
) -> Result<Response, ApiError> {
    let path = path_param(path)?;
    let r = body(b)?;
    rules_change(
        s,
        path.clone(),
        Change::SetRules {
            path,
            rules: r.rules,
        },
    )
    .await
}

async fn clear_rules(
    State(s): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let path = path_param(path)?;
    rules_change(
        s,
        path.clone(),
        Change::SetRules {
            path,
            rules: Vec::new(),
        },
    )
    .await
}

/// `PUT /v1/guards/{path}` sets a node's guards against bill shock (all of them), `DELETE`
/// removes them; the rules view.
async fn set_guards(
    State(s): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
    b: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let path = path_param(path)?;
    // An object only: serde would take every field of this all-optional struct from a list.
    let v = body(b)?;
    if !v.is_object() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "guards are a JSON object of the guards to set".into(),
        ));
    }
    let g: ocf_charging::rules::GuardSpec = serde_json::from_value(v)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("guards: {e}")))?;
    rules_change(
        s,
        path.clone(),
        Change::SetGuards {
            path,
            guards: Some(g),
        },
    )
    .await
}

async fn clear_guards(
    State(s): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let path = path_param(path)?;
    rules_change(s, path.clone(), Change::SetGuards { path, guards: None }).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonalAccount {
    personal_account: String,
}

/// `PUT /v1/personal-account/{path}` links a device to its user's personal account,
/// `DELETE` unlinks it; the rules view.
async fn set_personal_account(
    State(s): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
    b: Result<Json<PersonalAccount>, JsonRejection>,
) -> Result<Response, ApiError> {
    let path = path_param(path)?;
    let p = body(b)?;
    rules_change(
        s,
        path.clone(),
        Change::SetPersonalAccount {
            path,
            personal_account: Some(p.personal_account),
        },
    )
    .await
}

async fn clear_personal_account(
    State(s): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let path = path_param(path)?;
    rules_change(
        s,
        path.clone(),
        Change::SetPersonalAccount {
            path,
            personal_account: None,
        },
    )
    .await
}

async fn rules_change(s: AdminState, path: String, c: Change) -> Result<Response, ApiError> {
    change(&s, c).await?;
    let p = path.clone();
    let r = view(&s, move |e| e.accounts().rules_view(&p)).await?;
    tokio::spawn(crate::server::abort::reauth_sessions(
        s.store.clone(),
        s.peers.clone(),
        path,
        false,
    ));
    Ok(r)
}

/// `PUT /v1/blocked/{path}` blocks, `DELETE` unblocks; the node as it is now.
async fn block(
    State(s): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let path = path_param(path)?;
    let r = changed_node(
        &s,
        Change::Block { path: path.clone() },
        &path,
        StatusCode::OK,
    )
    .await?;
    // Open sessions under it are aborted (ASR), off the request.
    tokio::spawn(crate::server::abort::abort_sessions(
        s.store.clone(),
        s.peers.clone(),
        path,
    ));
    Ok(r)
}

async fn unblock(
    State(s): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let path = path_param(path)?;
    changed_node(
        &s,
        Change::Unblock { path: path.clone() },
        &path,
        StatusCode::OK,
    )
    .await
}

async fn set_limits(
    State(s): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
    b: Result<Json<Limits>, JsonRejection>,
) -> Result<Response, ApiError> {
    let path = path_param(path)?;
    let l = body(b)?;
    let r = changed_node(
        &s,
        Change::SetLimits {
            path: path.clone(),
            limits: l.limits,
        },
        &path,
        StatusCode::OK,
    )
    .await?;
    reauth_if_overcommitted(&s, path);
    Ok(r)
}

/// After a limit was lowered or allowance moved away: if what is used and reserved under the
/// node no longer fits, the gateways holding reservations there re-authorise (RAR), off the
/// request.
fn reauth_if_overcommitted(s: &AdminState, path: String) {
    if s.store
        .engine()
        .accounts()
        .overcommitted(&path)
        .unwrap_or(false)
    {
        tokio::spawn(crate::server::abort::reauth_sessions(
            s.store.clone(),
            s.peers.clone(),
            path,
            false,
        ));
    }
}

/// `POST /v1/reauth/{path}`: every open session under the node re-authorises (RAR); answers
/// 202 with how many there are.
async fn reauth(
    State(s): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let path = path_param(path)?;
    let p = path.clone();
    let n = off_workers(&s, move |st| {
        st.engine().sessions_under(&p).map(|v| v.len())
    })
    .await?
    .map_err(error)?;
    tokio::spawn(crate::server::abort::reauth_sessions(
        s.store.clone(),
        s.peers.clone(),
        path,
        true,
    ));
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "sessions": n })),
    )
        .into_response())
}

async fn set_subscriptions(
    State(s): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
    b: Result<Json<Ids>, JsonRejection>,
) -> Result<Response, ApiError> {
    let path = path_param(path)?;
    let ids = body(b)?;
    changed_node(
        &s,
        Change::SetSubscriptions {
            path: path.clone(),
            msisdn: ids.msisdn,
            imsi: ids.imsi,
            nai: ids.nai,
            sip_uri: ids.sip_uri,
        },
        &path,
        StatusCode::OK,
    )
    .await
}

async fn usage(
    State(s): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let path = path_param(path)?;
    let page = PageQuery::page(q)?;
    view(&s, move |e| {
        e.accounts().usage_page(&path, unix_now(), page)
    })
    .await
}

async fn sessions(
    State(s): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let path = path_param(path)?;
    view(&s, move |e| e.sessions_view(&path)).await
}

async fn policy(
    State(s): State<AdminState>,
    tenant: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let tenant = path_param(tenant)?;
    view(&s, move |e| e.accounts().policy_view(&tenant)).await
}

/// Changes the keys of the policy the body names (a JSON merge patch).
async fn set_policy(
    State(s): State<AdminState>,
    tenant: Result<Path<String>, PathRejection>,
    b: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let tenant = path_param(tenant)?;
    let patch = body(b)?;
    let name = tenant.clone();
    let by = super::caller::caller_name();
    off_workers(&s, move |e| {
        e.patch_policy(&name, &patch, unix_now(), by.as_deref())
    })
    .await?
    .map_err(error)?;
    // What the tenant's gateways hold was granted under the old policy.
    tokio::spawn(crate::server::abort::reauth_sessions(
        s.store.clone(),
        s.peers.clone(),
        tenant.clone(),
        false,
    ));
    view(&s, move |e| e.accounts().policy_view(&tenant)).await
}

async fn move_allowance(
    State(s): State<AdminState>,
    b: Result<Json<Move>, JsonRejection>,
) -> Result<Response, ApiError> {
    let m = body(b)?;
    let (from, to) = (m.from.clone(), m.to.clone());
    change(
        &s,
        Change::Move {
            from: m.from,
            to: m.to,
            unit: m.unit,
            period: m.period,
            amount: m.amount,
            class: m.class,
        },
    )
    .await?;
    reauth_if_overcommitted(&s, from.clone());
    view(&s, move |e| {
        let now = unix_now();
        Ok(Moved {
            from: e.accounts().usage_view(&from, now)?.node,
            to: e.accounts().usage_view(&to, now)?.node,
        })
    })
    .await
}

/// `GET /v1/events`: what the outbox holds after `after`, oldest first.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventQuery {
    #[serde(default)]
    after: u64,
    tenant: Option<String>,
    node: Option<String>,
    /// Kinds, comma-separated.
    kind: Option<String>,
    #[serde(default = "default_event_limit")]
    limit: usize,
    /// Wait up to this long for an event if there is none yet (a live view's long poll).
    #[serde(default)]
    wait_ms: u64,
    /// The newest `limit` events (after `after`) rather than the oldest; `next_after` is then
    /// the newest id in the outbox, to follow on from.
    #[serde(default)]
    newest: bool,
}

impl EventQuery {
    /// The events the query wants.
    fn filter(&self) -> ocf_store::events::Filter {
        ocf_store::events::Filter {
            after: self.after,
            tenant: self.tenant.clone(),
            node: self.node.as_ref().map(|n| n.trim_matches('/').to_owned()),
            kinds: self
                .kind
                .as_ref()
                .map(|k| k.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
        }
    }
}

fn default_event_limit() -> usize {
    100
}

/// Most events one answer holds, and the longest wait for one.
const MAX_EVENT_LIMIT: usize = 1000;
const MAX_EVENT_WAIT_MS: u64 = 5_000;

#[derive(Serialize)]
struct Events {
    events: Vec<serde_json::Value>,
    /// Ask with `after` set to this for the next page.
    next_after: u64,
}

async fn events(
    State(s): State<AdminState>,
    q: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    if !(1..=MAX_EVENT_LIMIT).contains(&q.limit) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("limit is 1 to {MAX_EVENT_LIMIT}"),
        ));
    }
    if q.wait_ms > MAX_EVENT_WAIT_MS {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("wait_ms is at most {MAX_EVENT_WAIT_MS}"),
        ));
    }
    let filter = q.filter();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(q.wait_ms);
    loop {
        // What the follower has written so far, to wait on if nothing is there yet.
        let seen = s.store.events_written();
        let (dir, f, limit, newest) = (s.events_dir.clone(), filter.clone(), q.limit, q.newest);
        let (events, next_after) = off_workers(&s, move |_| {
            if newest {
                ocf_store::events::read_newest(&dir, &f, limit)
            } else {
                ocf_store::events::read(&dir, &f, limit)
            }
        })
        .await?
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("events: {e}")))?;
        if !events.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(Events { events, next_after }).into_response());
        }
        // Nothing yet: look again once the follower wrote more (checked every 50 ms), or at
        // the deadline.
        while tokio::time::Instant::now() < deadline
            && s.store.events_written() == seen
            && seen.is_some()
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if seen.is_none() {
            tokio::time::sleep_until(
                deadline.min(tokio::time::Instant::now() + std::time::Duration::from_millis(200)),
            )
            .await;
        }
    }
}

/// `GET /v1/events/stream`: the events after `after` that the filters want, and then each new
/// one as it is written, as Server-Sent Events (`id:` the event's id, `data:` its JSON), until
/// the client goes; a comment every 15 s keeps idle connections open. For live views.
async fn events_stream(
    State(s): State<AdminState>,
    q: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let mut filter = q.filter();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(16);
    let (dir, store) = (s.events_dir.clone(), s.store.clone());
    tokio::spawn(async move {
        let written = || store.events_written();
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            let seen = written();
            let (d, f) = (dir.clone(), filter.clone());
            let read =
                tokio::task::spawn_blocking(move || ocf_store::events::read(&d, &f, 100)).await;
            let Ok(Ok((events, next))) = read else {
                return;
            };
            for e in &events {
                let chunk = format!("id: {}\ndata: {e}\n\n", e["id"]);
                if tx.send(Ok(bytes::Bytes::from(chunk))).await.is_err() {
                    return;
                }
                quiet_since = tokio::time::Instant::now();
            }
            filter.after = next.max(filter.after);
            if events.len() >= 100 {
                continue;
            }
            // Until the follower has written more (looked at every 200 ms).
            while written() == seen {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                if quiet_since.elapsed() >= std::time::Duration::from_secs(15) {
                    if tx
                        .send(Ok(bytes::Bytes::from_static(b": keep-alive\n\n")))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    quiet_since = tokio::time::Instant::now();
                }
                if seen.is_none() {
                    break;
                }
            }
        }
    });
    Ok(event_stream(rx))
}

/// A server-sent-events response whose chunks a task hands over on `rx`.
pub(super) fn event_stream(
    rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
) -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/event-stream"),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        axum::body::Body::from_stream(Chunks(rx)),
    )
        .into_response()
}

/// The chunks a task hands over, as a stream for a response body.
struct Chunks(tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>);

impl futures_core::Stream for Chunks {
    type Item = Result<bytes::Bytes, std::io::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// The `/v1` routes (nested under `/v1` by the caller).
pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/tenants", get(tenants).post(add_tenant))
        .route(
            "/nodes/{*path}",
            get(node).post(add_node).delete(remove_node),
        )
        .route("/limits/{*path}", put(set_limits))
        .route("/thresholds/{*path}", put(set_thresholds))
        .route("/blocked/{*path}", put(block).delete(unblock))
        .route(
            "/at-limit/{*path}",
            put(set_at_limit).delete(clear_at_limit),
        )
        .route(
            "/rules/{*path}",
            get(rules).put(set_rules).delete(clear_rules),
        )
        .route("/guards/{*path}", put(set_guards).delete(clear_guards))
        .route(
            "/personal-account/{*path}",
            put(set_personal_account).delete(clear_personal_account),
        )
        .route("/reauth/{*path}", post(reauth))
        .route("/subscriptions/{*path}", put(set_subscriptions))
        .route("/usage/{*path}", get(usage))
        .route("/sessions/{*path}", get(sessions))
        .route("/policy/{tenant}", get(policy).put(set_policy))
        .route("/moves", post(move_allowance))
        .route("/events", get(events))
        .route("/events/stream", get(events_stream))
}
