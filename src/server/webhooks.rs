//! Webhook delivery from the event outbox (docs/thresholds.md). Each configured endpoint has a
//! task of its own that reads the outbox after its cursor and POSTs the events of its tenants
//! as JSON, one at a time and in order, signed with HMAC-SHA256. A failed POST is tried again
//! after a backoff that doubles (with jitter) up to a ceiling; an event older than the
//! endpoint's `max_age_s` is given up (counted and logged). The cursor
//! (`state_dir/webhooks/<name>.cursor`; a cluster node of several partitions keeps one per
//! partition, under `partition-<n>/`) is written after each delivery, so after any stop
//! delivery goes on where it was: an event may be delivered again after a crash (at least
//! once; the receiver deduplicates by `id`), never skipped. Nothing here is on the path of an
//! answer: a slow or dead endpoint only makes its own cursor lag.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{info, warn};

pub use crate::config::WebhookTarget as Target;
use crate::config::{WebhookSection, parse_url};

/// One endpoint, ready to deliver.
pub struct Endpoint {
    pub name: String,
    pub target: Target,
    /// Tenants whose events it gets (empty: all).
    pub tenants: Vec<String>,
    key: ring::hmac::Key,
    tls: Option<tokio_rustls::TlsConnector>,
    pub max_age_s: u64,
    pub timeout: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl Endpoint {
    /// Builds an endpoint from its configuration, reading its secret and CA files.
    pub fn new(c: &WebhookSection) -> Result<Endpoint, String> {
        let target = parse_url(&c.url)?;
        let secret = std::fs::read_to_string(&c.secret_file)
            .map_err(|e| format!("{}: {e}", c.secret_file.display()))?;
        let secret = secret.lines().next().unwrap_or_default().trim();
        if secret.len() < 16 {
            return Err(format!(
                "{}: the secret's first line has at least 16 characters",
                c.secret_file.display()
            ));
        }
        let tls = match (&c.ca_file, target.https) {
            (Some(ca), true) => Some(connector(ca)?),
            (None, true) => {
                return Err(format!(
                    "'{}': an https webhook names the CA that signs its certificate (ca_file)",
                    c.url
                ));
            }
            (_, false) => None,
        };
        Ok(Endpoint {
            name: c.name.clone(),
            target,
            tenants: c.tenants.clone(),
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes()),
            tls,
            max_age_s: c.max_age_s,
            timeout: Duration::from_millis(c.timeout_ms),
            retry_initial: Duration::from_millis(c.retry_initial_ms),
            retry_max: Duration::from_millis(c.retry_max_ms),
        })
    }

    /// The signature header's value for `body`.
    pub fn sign(&self, body: &[u8]) -> String {
        let tag = ring::hmac::sign(&self.key, body);
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={hex}")
    }
}

fn connector(ca: &Path) -> Result<tokio_rustls::TlsConnector, String> {
    let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0;
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
        let cert: rustls_pki_types::CertificateDer<'static> =
            cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
        n += 1;
    }
    if n == 0 {
        return Err(format!("{}: no certificate in it", ca.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Counters of one endpoint, read by the metrics.
#[derive(Default)]
pub struct Progress {
    pub delivered: std::sync::atomic::AtomicU64,
    pub failures: std::sync::atomic::AtomicU64,
    pub given_up: std::sync::atomic::AtomicU64,
    /// The id delivered (or given up) last.
    pub cursor: std::sync::atomic::AtomicU64,
    /// Events of its tenants waiting, as of the last read of the outbox.
    pub pending: std::sync::atomic::AtomicU64,
}

/// The file that holds an endpoint's cursor.
fn cursor_path(cursors: &Path, name: &str) -> PathBuf {
    cursors.join(format!("{name}.cursor"))
}

fn read_cursor(path: &Path) -> Result<u64, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => t
            .trim()
            .parse()
            .map_err(|_| format!("{}: not a cursor ({:?})", path.display(), t.trim())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn write_cursor(path: &Path, id: u64) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Starts delivering to every endpoint the events of the outbox in `events`; each task runs
/// until it is ended (the server's stop); the cursors are kept in `cursors`. `written` says how many
/// events the outbox's follower has written (it changes when there is more).
pub fn start(
    endpoints: Vec<Endpoint>,
    cursors: &Path,
    events: &Path,
    written: Arc<dyn Fn() -> u64 + Send + Sync>,
) -> Result<Started, String> {
    let events = events.to_path_buf();
    let mut out = Vec::new();
    let mut tasks = Vec::new();
    for ep in endpoints {
        let cursor = cursor_path(cursors, &ep.name);
        let after = read_cursor(&cursor)?;
        let progress = Arc::new(Progress::default());
        progress
            .cursor
            .store(after, std::sync::atomic::Ordering::Relaxed);
        out.push((ep.name.clone(), progress.clone()));
        let (events, written) = (events.clone(), written.clone());
        tasks.push(tokio::spawn(async move {
            run(ep, events, cursor, progress, written).await
        }));
    }
    Ok((out, tasks))
}

/// Each endpoint's progress, by name, and the tasks delivering to them (to end at the stop).
pub type Started = (
    Vec<(String, Arc<Progress>)>,
    Vec<tokio::task::JoinHandle<()>>,
);

/// Events read from the outbox at a time.
const PAGE: usize = 100;

/// A little randomness for jitter, without a generator of its own.
fn jitter(d: Duration, seed: &mut u64) -> Duration {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    // 80% to 120%.
    let f = 0.8 + (*seed % 1000) as f64 / 2500.0;
    d.mul_f64(f)
}

async fn run(
    ep: Endpoint,
    events: PathBuf,
    cursor_file: PathBuf,
    progress: Arc<Progress>,
    written: Arc<dyn Fn() -> u64 + Send + Sync>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut after = progress.cursor.load(Relaxed);
    let mut seed = u64::from(std::process::id()) ^ after.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut filter = ocf_store::events::Filter {
        after,
        ..Default::default()
    };
    loop {
        let seen = written();
        filter.after = after;
        let (dir, f) = (events.clone(), filter.clone());
        let page = tokio::task::spawn_blocking(move || ocf_store::events::read(&dir, &f, PAGE))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let (page, next) = match page {
            Ok(p) => p,
            Err(e) => {
                warn!(webhook = %ep.name, error = %e, "the event outbox cannot be read");
                tokio::time::sleep(ep.retry_max.min(Duration::from_secs(5))).await;
                continue;
            }
        };
        // A full page: there may be more behind it.
        let full = page.len() >= PAGE;
        let mine: Vec<serde_json::Value> = page
            .into_iter()
            .filter(|e| {
                ep.tenants.is_empty()
                    || e["tenant"]
                        .as_str()
                        .is_some_and(|t| ep.tenants.iter().any(|x| x == t))
            })
            .collect();
        progress.pending.store(mine.len() as u64, Relaxed);
        for e in mine {
            let id = e["id"].as_u64().unwrap_or(after);
            deliver(&ep, &e, &progress, &mut seed).await;
            after = id;
            if let Err(err) = write_cursor(&cursor_file, after) {
                warn!(webhook = %ep.name, error = %err, "cursor not written; events after it may be sent again");
            }
            // Shown once written.
            progress.cursor.store(after, Relaxed);
            progress.pending.fetch_sub(1, Relaxed);
        }
        if next > after {
            // Events of other tenants: nothing to send, the cursor moves past them.
            after = next;
            let _ = write_cursor(&cursor_file, after);
            progress.cursor.store(after, Relaxed);
        }
        if full {
            continue;
        }
        // Nothing new: sleep until the follower has written more (looked at every 200 ms).
        while written() == seen {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Delivers one event: tries until the endpoint takes it (2xx) or it is older than the
/// endpoint's `max_age_s`.
async fn deliver(ep: &Endpoint, e: &serde_json::Value, progress: &Progress, seed: &mut u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut body = e.clone();
    if let Some(o) = body.as_object_mut() {
        // `seq` is the outbox's own bookkeeping (the same as `id`).
        o.remove("seq");
    }
    let body = body.to_string().into_bytes();
    let id = e["id"].as_u64().unwrap_or(0);
    let time = e["time"].as_i64().unwrap_or(0);
    let mut wait = ep.retry_initial;
    let mut failures = 0u32;
    loop {
        let now = crate::server::dispatch::unix_now();
        if now.saturating_sub(time) > ep.max_age_s as i64 {
            progress.given_up.fetch_add(1, Relaxed);
            warn!(webhook = %ep.name, id, age_s = now - time, "event given up: older than max_age_s");
            return;
        }
        match tokio::time::timeout(ep.timeout, post(ep, id, &body)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => {
                progress.delivered.fetch_add(1, Relaxed);
                if failures > 0 {
                    info!(webhook = %ep.name, id, failures, "delivered again");
                }
                return;
            }
            Ok(Ok(status)) => note_failure(ep, id, &format!("HTTP {status}"), failures),
            Ok(Err(err)) => note_failure(ep, id, &err, failures),
            Err(_) => note_failure(ep, id, "timed out", failures),
        }
        progress.failures.fetch_add(1, Relaxed);
        failures += 1;
        tokio::time::sleep(jitter(wait, seed)).await;
        wait = (wait * 2).min(ep.retry_max);
    }
}

fn note_failure(ep: &Endpoint, id: u64, why: &str, failures: u32) {
    // The first failure of an event, and then every tenth, not every retry.
    if failures % 10 == 0 {
        warn!(webhook = %ep.name, id, error = why, failures = failures + 1, "webhook delivery failed; retrying");
    }
}

/// One POST; the response's status code.
async fn post(ep: &Endpoint, id: u64, body: &[u8]) -> Result<u16, String> {
    let t = &ep.target;
    let tcp = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(|e| format!("connect {}:{}: {e}", t.host, t.port))?;
    let _ = tcp.set_nodelay(true);
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ocfd/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Ocfd-Event-Id: {id}\r\nX-Ocfd-Signature: {}\r\nConnection: close\r\n\r\n",
        t.path,
        if t.host.contains(':') {
            format!("[{}]", t.host)
        } else {
            t.host.clone()
        },
        env!("CARGO_PKG_VERSION"),
        body.len(),
        ep.sign(body),
    );
    match &ep.tls {
        Some(tls) => {
            let name = rustls_pki_types::ServerName::try_from(t.host.clone())
                .map_err(|e| format!("{}: {e}", t.host))?;
            let s = tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            exchange(s, head.as_bytes(), body).await
        }
        None => exchange(tcp, head.as_bytes(), body).await,
    }
}

/// Writes the request and reads the status line of the response (at most 16 KiB of head).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    head: &[u8],
    body: &[u8],
) -> Result<u16, String> {
    s.write_all(head).await.map_err(|e| e.to_string())?;
    s.write_all(body).await.map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        if buf.len() > 16 << 10 {
            return Err("no status line in 16 KiB".into());
        }
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before a status line".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => Ok(code),
        _ => Err(format!(
            "not an HTTP response: {:?}",
            line.chars().take(80).collect::<String>()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_fifth() {
        let mut seed = 12345;
        for _ in 0..1000 {
            let d = jitter(Duration::from_secs(10), &mut seed);
            assert!(
                d >= Duration::from_secs(8) && d <= Duration::from_secs(12),
                "{d:?}"
            );
        }
    }
}
