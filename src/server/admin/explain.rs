//! What the usage records and the decisions say: `GET /v1/explain/{subscriber}`, a device's
//! recent credit-control decisions (the engine's ring) and its latest usage records;
//! `GET /v1/explain/{subscriber}/what-if`, how a hypothetical request would be decided,
//! charging nothing (docs/rules.md); and `GET /v1/statements/{tenant}`, a tenant's usage per
//! device and cost centre in a period, summed from the usage records (JSON or CSV).

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::api::{error, off_workers, path_param};
use super::{AdminState, ApiError};
use crate::server::dispatch::unix_now;
use ocf_charging::engine::explain::WhatIf;
use ocf_charging::rules::Plmn;

/// Usage records explain reads back at most, and from how much of the newest usage files.
const MAX_HISTORY: usize = 100;
const HISTORY_BYTES: u64 = 64 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainQuery {
    /// Usage records to add (0 to 100).
    #[serde(default = "ten")]
    history: usize,
}

fn ten() -> usize {
    10
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))
}

fn bad(reason: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, reason.into())
}

async fn explain(
    State(s): State<AdminState>,
    subscriber: Result<Path<String>, PathRejection>,
    q: Result<Query<ExplainQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let subscriber = path_param(subscriber)?;
    let q = query(q)?;
    if q.history > MAX_HISTORY {
        return Err(bad(format!("history is at most {MAX_HISTORY}")));
    }
    let dir = s.usage_dir.clone();
    let body = off_workers(&s, move |store| {
        let view = store
            .engine()
            .explain(&subscriber, unix_now())
            .map_err(error)?;
        let history = if q.history == 0 {
            Vec::new()
        } else {
            ocf_store::usage::recent_of(&dir, &view.usage_name, q.history, HISTORY_BYTES).map_err(
                |e| {
                    ApiError(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("usage records: {e}"),
                    )
                },
            )?
        };
        let mut v = serde_json::to_value(&view).unwrap_or_default();
        v["history"] = serde_json::Value::Array(history);
        Ok::<_, ApiError>(v)
    })
    .await??;
    Ok(axum::Json(body).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WhatIfQuery {
    rating_group: Option<u32>,
    service_id: Option<u32>,
    apn: Option<String>,
    /// "MCCMNC".
    serving_network: Option<String>,
    /// A name (EUTRAN, NR, ...) or a 3GPP-RAT-Type value.
    rat_type: Option<String>,
    roaming: Option<bool>,
    zone: Option<String>,
    /// Local time in the tenant's time zone: "22:00", or with a weekday, "sat 22:00".
    at: Option<String>,
    /// Octets asked for (default: the slice).
    requested: Option<u64>,
}

/// "22:00" or "sat 22:00" as (weekday, second of the day).
fn local_at(text: &str) -> Result<(Option<u8>, u32), ApiError> {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let text = text.trim();
    let (day, time) = match text.split_once(' ') {
        Some((d, t)) => {
            let i = DAYS
                .iter()
                .position(|x| x.eq_ignore_ascii_case(d))
                .ok_or_else(|| bad(format!("at: '{d}' is not mon..sun")))?;
            (Some(i as u8), t)
        }
        None => (None, text),
    };
    let wrong = || bad(format!("at: '{text}' is not HH:MM or DAY HH:MM"));
    let (h, m) = time.split_once(':').ok_or_else(wrong)?;
    let (h, m): (u32, u32) = (
        h.parse().map_err(|_| wrong())?,
        m.parse().map_err(|_| wrong())?,
    );
    if h > 23 || m > 59 {
        return Err(wrong());
    }
    Ok((day, h * 3600 + m * 60))
}

async fn what_if(
    State(s): State<AdminState>,
    subscriber: Result<Path<String>, PathRejection>,
    q: Result<Query<WhatIfQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let subscriber = path_param(subscriber)?;
    let q = query(q)?;
    let serving = q
        .serving_network
        .as_deref()
        .map(|n| Plmn::parse(n).ok_or_else(|| bad(format!("serving_network '{n}' is not MCCMNC"))))
        .transpose()?;
    let rat = q
        .rat_type
        .as_deref()
        .map(|r| {
            r.parse::<u8>()
                .ok()
                .or_else(|| {
                    ocf_charging::rules::attributes::RAT_TYPES
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(r))
                        .map(|(_, v)| *v)
                })
                .ok_or_else(|| bad(format!("rat_type '{r}' is not a RAT type")))
        })
        .transpose()?;
    let (day, second) = match q.at.as_deref() {
        Some(t) => {
            let (d, s) = local_at(t)?;
            (d, Some(s))
        }
        None => (None, None),
    };
    let body = off_workers(&s, move |store| {
        let w = WhatIf {
            rating_group: q.rating_group,
            service_identifier: q.service_id,
            apn: q.apn.as_deref(),
            serving_network: serving,
            rat_type: rat,
            requested: q.requested,
            roaming: q.roaming,
            zone: q.zone.as_deref(),
            day,
            second,
        };
        store
            .engine()
            .what_if(&subscriber, &w, unix_now())
            .map(|v| serde_json::to_value(&v).unwrap_or_default())
            .map_err(error)
    })
    .await??;
    Ok(axum::Json(body).into_response())
}

pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/explain/{subscriber}", get(explain))
        .route("/explain/{subscriber}/what-if", get(what_if))
        .route("/statements/{tenant}", get(statement))
        .route("/reconcile", get(reconcile))
}

// Statements.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatementQuery {
    /// Unix seconds, included (default: the start of this calendar month, UTC).
    from: Option<i64>,
    /// Unix seconds, excluded (default: the start of the next).
    to: Option<i64>,
    /// json (default) or csv.
    format: Option<String>,
}

/// The start of the calendar month (UTC) `now` is in, and of the next.
fn this_month(now: i64) -> (i64, i64) {
    use jiff::ToSpan;
    let Ok(t) = jiff::Timestamp::from_second(now) else {
        return (0, now);
    };
    let start = t
        .to_zoned(jiff::tz::TimeZone::UTC)
        .first_of_month()
        .and_then(|z| z.start_of_day());
    match start {
        Ok(s) => {
            let next = s.checked_add(1.month()).map(|n| n.timestamp().as_second());
            (s.timestamp().as_second(), next.unwrap_or(i64::MAX))
        }
        Err(_) => (0, now),
    }
}

async fn statement(
    State(s): State<AdminState>,
    tenant: Result<Path<String>, PathRejection>,
    q: Result<Query<StatementQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let tenant = path_param(tenant)?;
    let q = query(q)?;
    let (month_from, month_to) = this_month(unix_now());
    let (from, to) = (q.from.unwrap_or(month_from), q.to.unwrap_or(month_to));
    if from >= to {
        return Err(bad("from must be before to"));
    }
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => return Err(bad(format!("format '{other}': json or csv"))),
    };
    let dir = s.usage_dir.clone();
    let known = {
        let t = tenant.clone();
        off_workers(&s, move |store| {
            store.engine().ledger().find_tree(&t).is_some()
        })
        .await?
    };
    if !known {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no tenant '{tenant}'"),
        ));
    }
    let st = off_workers(&s, move |_| {
        ocf_store::statement::statement(&dir, &tenant, from, to)
    })
    .await?
    .map_err(|e| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("usage records: {e}"),
        )
    })?;
    Ok(if csv {
        (
            [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            st.csv(),
        )
            .into_response()
    } else {
        axum::Json(st).into_response()
    })
}

// Reconciliation (operators only: the scope check lets no one else reach it).

/// One account whose ledger and usage records disagree.
#[derive(Debug, serde::Serialize)]
struct Difference {
    account: String,
    unit: &'static str,
    /// What the ledger says the account was charged in total.
    ledger: u64,
    /// What the usage records say, and what open sessions have charged since their last
    /// record (in no record yet).
    usage_records: u64,
    open_sessions: u64,
}

#[derive(Debug, serde::Serialize)]
struct Reconciled {
    /// No difference.
    consistent: bool,
    /// The journal's last written record, and the last the usage records were taken from.
    journal_written: u64,
    usage_records_synced: u64,
    /// Accounts compared.
    accounts: usize,
    differences: Vec<Difference>,
}

/// How long reconciliation waits for the usage records to catch up with the journal.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(10);

async fn reconcile(State(s): State<AdminState>) -> Result<Response, ApiError> {
    // What has been handed to the journal so far must reach the journal's file and then the
    // usage files before they are compared: waited for, bounded.
    let progress = s.store.journal().map(|j| j.progress());
    let target = progress.map_or(0, |p| p.queued.load(std::sync::atomic::Ordering::Acquire));
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    let (written, synced) = loop {
        let written = progress.map_or(0, |p| p.written.load(std::sync::atomic::Ordering::Acquire));
        let synced = s
            .store
            .usage_log()
            .map_or(u64::MAX, |u| u.synced_sequence());
        if (written >= target && synced >= target) || tokio::time::Instant::now() >= deadline {
            break (written, synced);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let dir = s.usage_dir.clone();
    let body = off_workers(&s, move |store| {
        let records = ocf_store::statement::charged_by_account(&dir).map_err(|e| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("usage records: {e}"),
            )
        })?;
        // Taken with requests stopped, so the ledger and the open sessions agree.
        let (ledger, open) = store.engine().frozen(|_| {
            (
                store.engine().charged_by_account(),
                store.engine().charged_in_open_sessions(),
            )
        });
        const UNITS: [&str; 4] = ["octets", "seconds", "events", "money"];
        let mut differences = Vec::new();
        let mut accounts: Vec<&String> = ledger.keys().chain(records.keys()).collect();
        accounts.sort();
        accounts.dedup();
        for a in &accounts {
            let l = ledger.get(*a).copied().unwrap_or_default();
            let r = records.get(*a).copied().unwrap_or_default();
            let o = open.get(*a).copied().unwrap_or_default();
            for k in 0..4 {
                if l[k] != r[k].saturating_add(o[k]) {
                    differences.push(Difference {
                        account: (*a).clone(),
                        unit: UNITS[k],
                        ledger: l[k],
                        usage_records: r[k],
                        open_sessions: o[k],
                    });
                }
            }
        }
        Ok::<_, ApiError>(Reconciled {
            consistent: differences.is_empty() && synced >= target,
            journal_written: written,
            usage_records_synced: synced.min(written),
            accounts: accounts.len(),
            differences,
        })
    })
    .await??;
    Ok(axum::Json(body).into_response())
}
