//! The telecoms manager's console: the page and its script at `/ui` (built into the binary:
//! nothing to install beside ocfd), who a token is (`/v1/whoami`), and the live usage of a
//! node and a page of its children (`/v1/live/{path}`), pushed as server-sent events when it
//! changes rather than polled by every open browser.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;

use super::api::{PageQuery, event_stream, off_workers, path_param};
use super::{AdminState, ApiError, caller};
use crate::server::clock::unix_now;
use ocf_charging::accounts::views::PageIndex;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// How often a live stream looks at the counters: twice a second, one tree lock each.
const LIVE_EVERY: Duration = Duration::from_millis(500);
/// A comment line at least this often, so proxies and browsers keep a quiet stream open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Live streams open at once, over every caller: each costs a lock and a view twice a second.
const MAX_LIVE: usize = 256;
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The console's files (no token needed: they hold no data; every call they make needs one).
/// Only its own script and style run, and no other site may frame it: a token in the page is
/// worth guarding.
pub(super) fn assets() -> Router<AdminState> {
    let file = |body: &'static str, kind: &'static str| {
        move || async move {
            (
                [
                    (header::CONTENT_TYPE, kind),
                    (header::CACHE_CONTROL, "no-cache"),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                    (
                        header::CONTENT_SECURITY_POLICY,
                        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
                    ),
                    (header::REFERRER_POLICY, "no-referrer"),
                ],
                body,
            )
                .into_response()
        }
    };
    Router::new()
        .route("/ui", get(file(INDEX, "text/html; charset=utf-8")))
        .route("/ui/", get(file(INDEX, "text/html; charset=utf-8")))
        .route(
            "/ui/app.js",
            get(file(SCRIPT, "text/javascript; charset=utf-8")),
        )
        .route("/ui/app.css", get(file(STYLE, "text/css; charset=utf-8")))
}

/// The console's API routes (under `/v1`, behind the token check).
pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/whoami", get(whoami))
        .route("/live/{*path}", get(live))
}

async fn whoami() -> Response {
    match caller::CALLER.try_with(Clone::clone) {
        Ok(c) => axum::Json(c).into_response(),
        Err(_) => ApiError(StatusCode::UNAUTHORIZED, "no caller".into()).into_response(),
    }
}

/// One open live stream, counted while it lasts.
struct LiveSlot;

impl LiveSlot {
    fn take() -> Option<LiveSlot> {
        LIVE.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_LIVE).then_some(n + 1)
        })
        .ok()
        .map(|_| LiveSlot)
    }
}

impl Drop for LiveSlot {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The node's usage and a page of its children's (the JSON of `GET /v1/usage/{path}`), at once
/// and then each time it changes; an `error` event and the end if the node goes.
async fn live(
    State(s): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let path = path_param(path)?;
    let page = PageQuery::page(q)?;
    // One view; the index of what the tree walk found goes in and comes back out, so that
    // the stream's later looks copy only the page's counters.
    let render = move |s: AdminState, path: String, mut index: PageIndex| async move {
        off_workers(&s, move |st| {
            let view = st
                .engine()
                .accounts()
                .usage_page_if_changed(&path, unix_now(), page, &mut index)
                .map(|v| v.map(|v| serde_json::to_string(&v).unwrap_or_default()));
            (view, index)
        })
        .await
    };
    // The first view answers errors (no such node) as a plain error, before the stream.
    let (first, index) = render(s.clone(), path.clone(), PageIndex::default()).await?;
    // A fresh index always has a view to show.
    let first = first.map_err(super::api::error)?.unwrap_or_default();
    let slot = LiveSlot::take().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_LIVE} live streams are open already; try again later"),
        )
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let _slot = slot;
        let mut index = index;
        let mut next = Some(first);
        let mut quiet = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(LIVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // A browser that went away ends the stream at once, not at the next change.
            tokio::select! {
                _ = tick.tick() => {}
                () = tx.closed() => return,
            }
            // None: nothing the view shows moved since the last look.
            let changed = match next.take() {
                Some(v) => Some(v),
                None => match render(s.clone(), path.clone(), std::mem::take(&mut index)).await {
                    Ok((Ok(v), i)) => {
                        index = i;
                        v
                    }
                    Ok((Err(e), _)) => {
                        let msg = serde_json::json!({ "error": e.to_string() });
                        let _ = tx
                            .send(Ok(Bytes::from(format!("event: error\ndata: {msg}\n\n"))))
                            .await;
                        return;
                    }
                    Err(_) => return,
                },
            };
            let chunk = match changed {
                Some(view) => Some(format!("event: usage\ndata: {view}\n\n")),
                None if quiet.elapsed() >= KEEP_ALIVE => Some(": keep-alive\n\n".to_owned()),
                None => None,
            };
            if let Some(c) = chunk {
                if tx.send(Ok(Bytes::from(c))).await.is_err() {
                    return;
                }
                quiet = tokio::time::Instant::now();
            }
        }
    });
    Ok(event_stream(rx))
}
