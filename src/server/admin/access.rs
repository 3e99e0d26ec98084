//! Scoped access to the admin API: besides the operator's token (`admin.token_file`), named
//! tokens with a role and a scope, kept hashed (SHA-256) in `state_dir/tokens.json`, or in a
//! cluster in the JetStream bucket every node shares (`ocf_cluster::tokens`):
//!
//! - `operator`: everything;
//! - `manager`: read and change within its scope (a tenant, or a node and what is under it);
//! - `viewer`: read within its scope.
//!
//! Every `/v1` request is checked here, once, before its handler runs: what it names (a node
//! path, a tenant, a move's two nodes, a subscriber's account, the events it asks for) must be
//! within the caller's scope, and only `GET` is open to viewers. A request outside is answered
//! 403 and leaves an `access_denied` event in the outbox.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::ApiError;

pub use super::caller::{CALLER, Caller, Role, caller_name};

/// A named token as kept: its SHA-256, never the token.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    sha256: String,
    created: i64,
}

/// A token as the API lists it.
#[derive(Clone, Debug, Serialize)]
pub struct TokenView {
    pub name: String,
    pub role: Role,
    pub scope: Option<String>,
    pub created: i64,
}

/// The named tokens, in memory and in their file (or, in a cluster, the bucket every node
/// shares).
pub struct Tokens {
    file: PathBuf,
    entries: RwLock<Vec<Entry>>,
    shared: std::sync::OnceLock<std::sync::Arc<ocf_cluster::tokens::SharedTokens>>,
    /// In a cluster: the bucket's revision of each token as last applied here (an older
    /// change that arrives late is not applied over a newer one).
    revisions: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

/// Named tokens at most.
const MAX_TOKENS: usize = 10_000;

fn sha256_hex(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Tokens {
    /// Reads `file` (none yet: no named tokens).
    pub fn load(file: &Path) -> Result<Tokens, String> {
        let entries = match std::fs::read(file) {
            Ok(data) => serde_json::from_slice::<Vec<Entry>>(&data)
                .map_err(|e| format!("{}: {e}", file.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("{}: {e}", file.display())),
        };
        Ok(Tokens {
            file: file.to_owned(),
            entries: RwLock::new(entries),
            shared: std::sync::OnceLock::new(),
            revisions: Default::default(),
        })
    }

    /// From now on the tokens are the cluster's: made and revoked in `shared` first, and
    /// kept as it holds them ([`Tokens::changed`]); the file is left as it was. The tokens of
    /// the file go to the bucket if no node put its own there before; then the bucket's
    /// replace them all (a token only this node's file has does not work here either).
    pub async fn share(
        &self,
        shared: std::sync::Arc<ocf_cluster::tokens::SharedTokens>,
    ) -> Result<(), String> {
        let mine: Vec<(String, bytes::Bytes)> = self
            .entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|e| {
                let value = serde_json::to_vec(e).unwrap_or_default();
                (e.name.clone(), value.into())
            })
            .collect();
        shared.seed(mine).await.map_err(|e| e.to_string())?;
        let all = shared.all().await.map_err(|e| e.to_string())?;
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        for t in all {
            self.changed(t);
        }
        let _ = self.shared.set(shared);
        Ok(())
    }

    /// The bucket's token as it is now (its value `None`: revoked), unless a newer revision
    /// of it was applied here. One that does not read as a token is left out, and said; past
    /// [`MAX_TOKENS`] a new one is left out too.
    pub fn changed(&self, t: ocf_cluster::tokens::Shared) {
        let mut revisions = self.revisions.lock().unwrap_or_else(|p| p.into_inner());
        if revisions.get(&t.name).is_some_and(|&r| r >= t.revision) {
            return;
        }
        revisions.insert(t.name.clone(), t.revision);
        let name = t.name.as_str();
        let entry = match t.value.as_deref().map(serde_json::from_slice::<Entry>) {
            Some(Ok(e)) if e.name == name => Some(e),
            Some(_) => {
                tracing::warn!(
                    token = name,
                    "a shared token does not read as one: left out"
                );
                None
            }
            None => None,
        };
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        entries.retain(|e| e.name != name);
        if let Some(e) = entry {
            if entries.len() >= MAX_TOKENS {
                tracing::warn!(
                    token = name,
                    "more than {MAX_TOKENS} shared tokens: left out"
                );
                return;
            }
            entries.push(e);
        }
    }

    /// The bucket the tokens are shared in, in a cluster.
    pub fn shared(&self) -> Option<std::sync::Arc<ocf_cluster::tokens::SharedTokens>> {
        self.shared.get().cloned()
    }

    /// The caller a token names, if it is one of these.
    pub fn caller(&self, token: &str) -> Option<Caller> {
        let hash = sha256_hex(token);
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .find(|e| super::same_token(e.sha256.as_bytes(), hash.as_bytes()))
            .map(|e| Caller {
                name: e.name.clone(),
                role: e.role,
                scope: e.scope.clone(),
            })
    }

    pub fn list(&self) -> Vec<TokenView> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .map(|e| TokenView {
                name: e.name.clone(),
                role: e.role,
                scope: e.scope.clone(),
                created: e.created,
            })
            .collect()
    }

    /// Makes a token and keeps its hash (synced before it is handed out); the token itself.
    pub fn create(
        &self,
        name: &str,
        role: Role,
        scope: Option<String>,
        now: i64,
    ) -> Result<String, ApiError> {
        let (entry, token) = self.make(name, role, scope, now)?;
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.iter().any(|e| e.name == name) {
            return Err(taken(name));
        }
        let mut next = entries.clone();
        next.push(entry);
        self.write(&next)?;
        *entries = next;
        Ok(token)
    }

    /// [`Tokens::create`] in a cluster: made in the shared bucket first (refused if any node
    /// has a token of that name), then here.
    pub async fn create_shared(
        &self,
        shared: &ocf_cluster::tokens::SharedTokens,
        name: &str,
        role: Role,
        scope: Option<String>,
        now: i64,
    ) -> Result<String, ApiError> {
        use ocf_cluster::tokens::Created;
        let (entry, token) = self.make(name, role, scope, now)?;
        let value = bytes::Bytes::from(serde_json::to_vec(&entry).unwrap_or_default());
        let revision = match shared.create(name, value.clone()).await {
            Ok(Created::Made(r)) => r,
            Ok(Created::Taken) => return Err(taken(name)),
            Err(e) => return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        };
        self.changed(ocf_cluster::tokens::Shared {
            name: name.to_owned(),
            value: Some(value),
            revision,
        });
        Ok(token)
    }

    /// [`Tokens::revoke`] in a cluster: revoked in the shared bucket first, then here.
    pub async fn revoke_shared(
        &self,
        shared: &ocf_cluster::tokens::SharedTokens,
        name: &str,
    ) -> Result<bool, ApiError> {
        let seen = |t: &Self| {
            t.revisions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
                .copied()
        };
        let before = seen(self);
        let revoked = shared
            .revoke(name)
            .await
            .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        // Gone here at once, unless the bucket's watch brought a newer change of it meanwhile
        // (the revoke itself comes that way too).
        if revoked && seen(self) == before {
            self.entries
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|e| e.name != name);
        }
        Ok(revoked)
    }

    /// Checks a new token's name, role and scope and makes it: what is kept of it, and the
    /// token itself.
    fn make(
        &self,
        name: &str,
        role: Role,
        scope: Option<String>,
        now: i64,
    ) -> Result<(Entry, String), ApiError> {
        let bad = |r: String| ApiError(StatusCode::BAD_REQUEST, r);
        if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control() || c == '/') {
            return Err(bad("a token's name has 1 to 64 characters, no '/'".into()));
        }
        if role == Role::Operator && scope.is_some() {
            return Err(bad(
                "an operator's token reaches everything: it takes no scope".into(),
            ));
        }
        if role != Role::Operator
            && scope
                .as_deref()
                .is_none_or(|s| s.trim_matches('/').is_empty())
        {
            return Err(bad(
                "a manager's or viewer's token needs a scope (a tenant or a node path)".into(),
            ));
        }
        let scope = scope
            .map(|s| s.trim_matches('/').to_owned())
            .filter(|s| !s.is_empty());
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        if entries.iter().any(|e| e.name == name) {
            return Err(taken(name));
        }
        if entries.len() >= MAX_TOKENS {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!("at most {MAX_TOKENS} tokens"),
            ));
        }
        let token = super::random_token().map_err(|e| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no randomness: {e}"),
            )
        })?;
        let entry = Entry {
            name: name.to_owned(),
            role,
            scope,
            sha256: sha256_hex(&token),
            created: now,
        };
        Ok((entry, token))
    }

    /// Forgets a token; false if there is none of that name.
    pub fn revoke(&self, name: &str) -> Result<bool, ApiError> {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let next: Vec<Entry> = entries.iter().filter(|e| e.name != name).cloned().collect();
        if next.len() == entries.len() {
            return Ok(false);
        }
        self.write(&next)?;
        *entries = next;
        Ok(true)
    }

    /// Writes the file whole: a temporary file, synced, renamed over it, the directory synced.
    fn write(&self, entries: &[Entry]) -> Result<(), ApiError> {
        let fail = |e: std::io::Error| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{}: {e}", self.file.display()),
            )
        };
        let data = serde_json::to_vec_pretty(entries).unwrap_or_default();
        let tmp = self.file.with_extension("json.tmp");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(fail)?;
            f.write_all(&data).map_err(fail)?;
            f.sync_all().map_err(fail)?;
        }
        std::fs::rename(&tmp, &self.file).map_err(fail)?;
        if let Some(dir) = self.file.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(fail)?;
        }
        Ok(())
    }
}

fn taken(name: &str) -> ApiError {
    ApiError(
        StatusCode::CONFLICT,
        format!("a token named '{name}' exists already"),
    )
}

/// Whether `path` is `scope` or under it (`scope` none: everything).
pub fn within(scope: Option<&str>, path: &str) -> bool {
    let path = path.trim_matches('/');
    match scope {
        None => true,
        Some(s) => path == s || path.strip_prefix(s).is_some_and(|r| r.starts_with('/')),
    }
}

/// Percent-decodes a URI path segment run (invalid escapes are kept as they are).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a `/v1` request names, for the scope check.
pub enum Target {
    /// Only operators (tenants, tokens, anything not listed).
    Operators,
    /// Any caller (who it is).
    Anyone,
    /// A node path (or a tenant).
    Path(String),
    /// A move: its two nodes (read from the body).
    Move,
    /// The events: scoped callers see their scope's only.
    Events,
    /// A subscriber's account.
    Subscriber(String),
}

/// What the request at `path` (after `/v1/`) names.
pub fn target(path: &str) -> Target {
    let (resource, rest) = path.split_once('/').unwrap_or((path, ""));
    match resource {
        "nodes" | "limits" | "thresholds" | "blocked" | "at-limit" | "reauth" | "subscriptions"
        | "usage" | "sessions" | "rules" | "guards" | "personal-account" | "policy" | "live"
        | "statements" => Target::Path(decode(rest)),
        "whoami" => Target::Anyone,
        "moves" => Target::Move,
        "events" => Target::Events,
        "explain" => Target::Subscriber(decode(rest.split('/').next().unwrap_or(""))),
        _ => Target::Operators,
    }
}

/// Whether the caller's role lets it make a request of `method` at all.
pub fn may(caller: &Caller, method: &Method) -> bool {
    caller.role != Role::Viewer || matches!(*method, Method::GET | Method::HEAD)
}

/// A scoped caller's query for events: the node it asked for if within its scope, else its
/// scope added. None: a node or tenant outside it.
pub fn events_query(caller: &Caller, query: Option<&str>) -> Option<String> {
    let Some(scope) = caller.scope.as_deref() else {
        return Some(query.unwrap_or("").to_owned());
    };
    let mut parts: Vec<String> = Vec::new();
    let mut has_node = false;
    for kv in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "node" => {
                if !within(Some(scope), &decode(v)) {
                    return None;
                }
                has_node = true;
            }
            "tenant" => {
                let t = decode(v);
                if !within(Some(scope), &t) && scope.split('/').next() != Some(t.as_str()) {
                    return None;
                }
            }
            _ => {}
        }
        parts.push(kv.to_owned());
    }
    if !has_node {
        parts.push(format!("node={}", crate::ctl::http::encode_path(scope)));
    }
    Some(parts.join("&"))
}

/// A move's two nodes from its body (none: not a move body; the handler says why).
pub fn move_nodes(body: &[u8]) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some((
        v.get("from")?.as_str()?.to_owned(),
        v.get("to")?.as_str()?.to_owned(),
    ))
}

/// The most octets of a move's body read for the check.
pub const MAX_MOVE_BODY: usize = 64 << 10;

/// The body of `req`, read whole (bounded), and the request again.
pub async fn buffered(req: Request) -> Result<(Request, bytes::Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_MOVE_BODY)
        .await
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("body: {e}")))?;
    Ok((Request::from_parts(parts, Body::from(bytes.clone())), bytes))
}

// The token routes (operators only: the scope check lets no one else reach them).

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: Role,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Debug, Serialize)]
struct Created {
    name: String,
    role: Role,
    scope: Option<String>,
    /// The token itself: shown this once, kept only as its hash.
    token: String,
}

async fn create_token(
    axum::extract::State(s): axum::extract::State<super::AdminState>,
    b: Result<axum::Json<NewToken>, axum::extract::rejection::JsonRejection>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let t = b
        .map(|axum::Json(t)| t)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let tokens = s.tokens.clone();
    let (name, role, scope) = (t.name.clone(), t.role, t.scope.clone());
    let now = crate::server::clock::unix_now();
    let token = match tokens.shared() {
        Some(shared) => {
            tokens
                .create_shared(&shared, &name, role, scope, now)
                .await?
        }
        None => {
            super::api::off_workers(&s, move |_| tokens.create(&name, role, scope, now)).await??
        }
    };
    let scope = t.scope.map(|s| s.trim_matches('/').to_owned());
    token_event(
        &s,
        "token_created",
        &t.name,
        Some((t.role, scope.as_deref())),
    );
    Ok((
        StatusCode::CREATED,
        axum::Json(Created {
            name: t.name,
            role: t.role,
            scope,
            token,
        }),
    )
        .into_response())
}

async fn list_tokens(
    axum::extract::State(s): axum::extract::State<super::AdminState>,
) -> axum::Json<Vec<TokenView>> {
    axum::Json(s.tokens.list())
}

async fn revoke_token(
    axum::extract::State(s): axum::extract::State<super::AdminState>,
    name: axum::extract::Path<String>,
) -> Result<StatusCode, ApiError> {
    let tokens = s.tokens.clone();
    let n = name.0.clone();
    let revoked = match tokens.shared() {
        Some(shared) => tokens.revoke_shared(&shared, &n).await?,
        None => super::api::off_workers(&s, move |_| tokens.revoke(&n)).await??,
    };
    match revoked {
        true => {
            token_event(&s, "token_revoked", &name.0, None);
            Ok(StatusCode::NO_CONTENT)
        }
        false => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no token named '{}'", name.0),
        )),
    }
}

/// The audit event of a token made (with its role and scope) or revoked, naming who did it.
fn token_event(s: &super::AdminState, kind: &str, token: &str, made: Option<(Role, Option<&str>)>) {
    let now = crate::server::clock::unix_now();
    let scope = made.and_then(|(_, scope)| scope);
    let mut e = serde_json::json!({
        "kind": kind,
        "tenant": scope.and_then(|s| s.split('/').next()).unwrap_or_default(),
        "path": scope.unwrap_or_default(),
        "time": now,
        "token": token,
        "by": caller_name(),
    });
    if let Some((role, _)) = made {
        e["role"] = serde_json::to_value(role).unwrap_or_default();
    }
    s.store.event(now, &e);
}

/// `POST/GET /v1/tokens`, `DELETE /v1/tokens/{name}`.
pub(super) fn routes() -> axum::Router<super::AdminState> {
    use axum::routing::{delete, get};
    axum::Router::new()
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{name}", delete(revoke_token))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the shared bucket says of a token is what this node knows of it: made, changed,
    /// revoked; a change older than one applied is not applied; a value that is not a token
    /// (or another's) is left out.
    #[test]
    fn a_shared_token_is_known_as_the_bucket_says() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::load(&dir.path().join("tokens.json")).unwrap();
        let shared = |name: &str, role: Option<&str>, revision: u64| {
            let value = role.map(|role| {
                format!(
                    r#"{{"name":"ops","role":"{role}","scope":"acme","sha256":"{}","created":5}}"#,
                    sha256_hex("secret")
                )
                .into_bytes()
                .into()
            });
            ocf_cluster::tokens::Shared {
                name: name.into(),
                value,
                revision,
            }
        };
        tokens.changed(shared("ops", Some("manager"), 3));
        let c = tokens.caller("secret").unwrap();
        assert_eq!((c.name.as_str(), c.role), ("ops", Role::Manager));
        tokens.changed(shared("ops", Some("viewer"), 4));
        assert_eq!(tokens.list().len(), 1);
        assert_eq!(tokens.caller("secret").unwrap().role, Role::Viewer);
        // A revoke older than what was applied (it came late): not applied.
        tokens.changed(shared("ops", None, 2));
        assert_eq!(tokens.caller("secret").unwrap().role, Role::Viewer);
        // Another name's value, or no token at all: left out.
        tokens.changed(shared("other", Some("viewer"), 5));
        assert_eq!(tokens.list().len(), 1);
        tokens.changed(ocf_cluster::tokens::Shared {
            name: "ops".into(),
            value: Some(bytes::Bytes::from_static(b"not a token")),
            revision: 6,
        });
        assert!(tokens.caller("secret").is_none());
        tokens.changed(shared("ops", Some("manager"), 7));
        tokens.changed(shared("ops", None, 8));
        assert!(tokens.list().is_empty());
        // Nothing of it went to this node's file.
        assert!(!dir.path().join("tokens.json").exists());
    }
}
