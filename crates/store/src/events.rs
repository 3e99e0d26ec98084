//! The event outbox: one JSON line per event in `state_dir/events/events-<n>.jsonl`, copied out
//! of the journal by a follower thread exactly like usage records (`usage`), so an event is in
//! the outbox if and only if the ledger change that caused it reached the journal, and after
//! any stop the follower resumes after the last whole line. An event's `id` is the journal
//! sequence of the record that made it: unique, rising, and the same however often the
//! journal is read (a consumer deduplicates by it).
//!
//! ```text
//! {"seq":N,"id":N,"kind":"threshold_crossed","time":1795000000,"tenant":"acme",
//!  "path":"acme/iot/15551008000","unit":"octets","period":"month","used":8388608,
//!  "limit":10485760,"threshold":{"percent":80},"default":true}
//! ```
//!
//! `kind` is `limit_reached` when the level is the whole limit (100%, or an amount at or above
//! it), else `threshold_crossed`; `default` says whether the level is one every account has
//! (`charging.device_thresholds`) or one of the node's own thresholds.

use std::io;
use std::path::Path;

use serde::Serialize;

use crate::record::{FiredLevel, Op, Record};
use crate::usage::Stream;

/// Events: journal kind 9 (a threshold that fired), rendered as JSON lines.
pub const EVENTS: Stream = Stream {
    prefix: "events",
    kind: crate::record::KIND_THRESHOLD,
    render,
    what: "events",
};

#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    id: u64,
    kind: &'static str,
    time: i64,
    tenant: &'a str,
    path: &'a str,
    unit: &'static str,
    period: &'static str,
    used: u64,
    limit: u64,
    threshold: Level,
    default: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum Level {
    Percent(u8),
    Amount(u64),
}

fn render(r: &Record, out: &mut Vec<u8>) {
    let Op::Threshold(f) = &r.op else {
        return;
    };
    let (threshold, whole) = match f.level {
        FiredLevel::Percent(p) => (Level::Percent(p), p >= 100),
        FiredLevel::Amount(a) => (Level::Amount(a), a >= f.limit),
    };
    let line = Line {
        seq: r.sequence,
        id: r.sequence,
        kind: if whole {
            "limit_reached"
        } else {
            "threshold_crossed"
        },
        time: r.time,
        tenant: f.path.split('/').next().unwrap_or_default(),
        path: &f.path,
        unit: ["octets", "seconds", "events", "money"]
            .get(usize::from(f.unit))
            .copied()
            .unwrap_or("unknown"),
        period: ["day", "month", "total"]
            .get(usize::from(f.period))
            .copied()
            .unwrap_or("unknown"),
        used: f.used,
        limit: f.limit,
        threshold,
        default: f.default,
    };
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}

/// Which events a reader wants.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only events with a greater id.
    pub after: u64,
    /// Only this tenant's.
    pub tenant: Option<String>,
    /// Only events of this node or below it (a path, "acme/sales").
    pub node: Option<String>,
}

impl Filter {
    fn wants(&self, e: &serde_json::Value) -> bool {
        let text = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        self.tenant.as_deref().is_none_or(|t| text("tenant") == t)
            && self.node.as_deref().is_none_or(|n| {
                let p = text("path");
                p == n || p.strip_prefix(n).is_some_and(|rest| rest.starts_with('/'))
            })
    }
}

/// The first `limit` events in `dir` that `filter` wants, oldest first, and the id to ask
/// after next (the last id looked at: events filtered out are not looked at again).
pub fn read(
    dir: &Path,
    filter: &Filter,
    limit: usize,
) -> io::Result<(Vec<serde_json::Value>, u64)> {
    let mut out = Vec::new();
    let mut last = filter.after;
    let files = match crate::usage::stream_files(dir, EVENTS.prefix) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((out, last)),
        Err(e) => return Err(e),
    };
    // Files hold rising ids: start from the last one whose first id is not past `after`.
    let mut start = 0;
    for (i, path) in files.iter().enumerate() {
        match first_id(path)? {
            Some(id) if id <= filter.after.saturating_add(1) => start = i,
            Some(_) => break,
            None => {}
        }
    }
    for path in &files[start..] {
        let data = std::fs::read(path)?;
        // Only whole lines: the follower may be writing the last one.
        for line in data.split_inclusive(|b| *b == b'\n') {
            if out.len() >= limit {
                return Ok((out, last));
            }
            let Some(line) = line.strip_suffix(b"\n") else {
                break;
            };
            let Some(id) = crate::usage::line_sequence(line) else {
                continue;
            };
            if id <= filter.after {
                continue;
            }
            last = id;
            if let Ok(e) = serde_json::from_slice::<serde_json::Value>(line) {
                if filter.wants(&e) {
                    out.push(e);
                }
            }
        }
    }
    Ok((out, last))
}

/// The id of the last event in the outbox in `dir` (0: none).
pub fn last_id(dir: &Path) -> io::Result<u64> {
    for path in crate::usage::stream_files(dir, EVENTS.prefix)?.iter().rev() {
        let data = std::fs::read(path)?;
        let last = data
            .split(|b| *b == b'\n')
            .rev()
            .find_map(crate::usage::line_sequence);
        if let Some(id) = last {
            return Ok(id);
        }
    }
    Ok(0)
}

/// The id of a file's first line, if it has one.
fn first_id(path: &Path) -> io::Result<Option<u64>> {
    use std::io::Read;
    let mut head = [0u8; 40];
    let n = std::fs::File::open(path)?.read(&mut head)?;
    Ok(crate::usage::line_sequence(&head[..n]))
}
