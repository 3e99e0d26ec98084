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
//! (`charging.device_thresholds`) or one of the node's own thresholds; `class` (when there)
//! names the service class of the limit (a service allowance, `roaming` for a roaming cap).
//! Other events (journal kind 10) carry `kind`, `tenant`, `path` and `time` and fields of
//! their own: `blocked` and `unblocked`, `allowance_moved` (`to`, `unit`, `period`, `amount`,
//! `class`), `session_aborted` (`session_id`, `gateway`, `reason`), `policy_applied`
//! (`action`, `subscriber`, `rating_group`, `rule`), `velocity_exceeded` (`guard`, `octets`,
//! `limit`, `window_s`, `action`, `subscriber`) and `ceiling_tripped` (`guard`, `subscriber`,
//! and `granted`, or `limit`, `attempted` and `refused` for a report).

use std::io;
use std::io::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::record::{FiredLevel, Op, Record};
use crate::usage::Stream;

/// Events: journal kinds 9 (a threshold that fired) and 10 (any other event), rendered as
/// JSON lines.
pub const EVENTS: Stream = Stream {
    prefix: "events",
    kinds: &[crate::record::KIND_THRESHOLD, crate::record::KIND_EVENT],
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
    /// The service class of the limit (a service allowance, a roaming cap).
    #[serde(skip_serializing_if = "str::is_empty")]
    class: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum Level {
    Percent(u8),
    Amount(u64),
}

/// The kind of event a threshold that fired is: `limit_reached` when its level is the whole
/// limit, else `threshold_crossed`.
pub(crate) fn threshold_kind(f: &crate::record::Fired) -> &'static str {
    let whole = match f.level {
        FiredLevel::Percent(p) => p >= 100,
        FiredLevel::Amount(a) => a >= f.limit,
    };
    if whole {
        "limit_reached"
    } else {
        "threshold_crossed"
    }
}

fn render(r: &Record, out: &mut Vec<u8>) {
    let f = match &r.op {
        Op::Threshold(f) => f,
        Op::Event(data) => {
            // `{"seq":N,"id":N,` then the event's own fields.
            if data.first() == Some(&b'{') && data.len() > 2 {
                let _ = write!(out, "{{\"seq\":{},\"id\":{},", r.sequence, r.sequence);
                out.extend_from_slice(&data[1..]);
                out.push(b'\n');
            }
            return;
        }
        _ => return,
    };
    let threshold = match f.level {
        FiredLevel::Percent(p) => Level::Percent(p),
        FiredLevel::Amount(a) => Level::Amount(a),
    };
    let line = Line {
        seq: r.sequence,
        id: r.sequence,
        kind: threshold_kind(f),
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
        class: &f.class,
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
    /// Only events of these kinds (none: all).
    pub kinds: Vec<String>,
}

impl Filter {
    fn wants(&self, e: &serde_json::Value) -> bool {
        let text = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        (self.kinds.is_empty() || self.kinds.iter().any(|k| text("kind") == k))
            && self.tenant.as_deref().is_none_or(|t| text("tenant") == t)
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
    let Some(files) = outbox_files(dir)? else {
        return Ok((out, last));
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

/// The outbox's files, oldest first; none if there is no outbox yet.
fn outbox_files(dir: &Path) -> io::Result<Option<Vec<std::path::PathBuf>>> {
    match crate::usage::stream_files(dir, EVENTS.prefix) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The newest `limit` events after `filter.after` that the filter wants, oldest first, and the
/// id of the newest event in the outbox (to read on from): a live view starts from the end of
/// a long outbox without reading it all out.
pub fn read_newest(
    dir: &Path,
    filter: &Filter,
    limit: usize,
) -> io::Result<(Vec<serde_json::Value>, u64)> {
    let mut out = Vec::new();
    let mut newest = filter.after;
    let Some(files) = outbox_files(dir)? else {
        return Ok((out, newest));
    };
    'files: for path in files.iter().rev() {
        let data = std::fs::read(path)?;
        // Only whole lines: the follower may be writing the last one.
        let whole = match data.iter().rposition(|b| *b == b'\n') {
            Some(end) => &data[..end],
            None => continue,
        };
        for line in whole.split(|b| *b == b'\n').rev() {
            let Some(id) = crate::usage::line_sequence(line) else {
                continue;
            };
            if id <= filter.after || out.len() >= limit {
                break 'files;
            }
            newest = newest.max(id);
            if let Ok(e) = serde_json::from_slice::<serde_json::Value>(line) {
                if filter.wants(&e) {
                    out.push(e);
                }
            }
        }
    }
    out.reverse();
    Ok((out, newest))
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

/// What [`prune`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Files removed.
    pub files: usize,
    /// Events in them that some reader (`undelivered_after`) had not taken yet.
    pub undelivered: u64,
    /// Octets the outbox holds after.
    pub bytes: u64,
}

/// Keeps the outbox in `dir` bounded: removes its oldest files, never the newest one (the
/// follower writes to it), when every event in them is older than `older_than` (Unix seconds)
/// and at or below `taken` (what every webhook endpoint has taken), and, past `max_bytes`,
/// whatever the oldest files hold (those events are lost to readers that had not taken them,
/// counted in [`Pruned::undelivered`]).
pub fn prune(dir: &Path, older_than: i64, taken: u64, max_bytes: u64) -> io::Result<Pruned> {
    let files = match crate::usage::stream_files(dir, EVENTS.prefix) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Pruned::default()),
        Err(e) => return Err(e),
    };
    let sizes: Vec<u64> = files
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()))
        .collect::<io::Result<_>>()?;
    let mut out = Pruned {
        bytes: sizes.iter().sum(),
        ..Pruned::default()
    };
    let Some((_, older)) = files.split_last() else {
        return Ok(out);
    };
    for (path, size) in older.iter().zip(&sizes) {
        let data = std::fs::read(path)?;
        let (mut last_id, mut last_time, mut after_taken) = (0u64, i64::MIN, 0u64);
        for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Some(id) = crate::usage::line_sequence(line) else {
                continue;
            };
            last_id = last_id.max(id);
            if id > taken {
                after_taken += 1;
            }
            if let Some(t) = serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["time"].as_i64())
            {
                last_time = last_time.max(t);
            }
        }
        let expired = last_time < older_than && last_id <= taken;
        let over = out.bytes > max_bytes;
        if !expired && !over {
            break;
        }
        std::fs::remove_file(path)?;
        out.files += 1;
        out.bytes -= size;
        if !expired {
            out.undelivered += after_taken;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: u64, time: i64) -> String {
        format!(
            "{{\"seq\":{id},\"id\":{id},\"kind\":\"threshold_crossed\",\"time\":{time},\"tenant\":\"t\",\"path\":\"t\"}}\n"
        )
    }

    #[test]
    fn prune_keeps_the_newest_file_what_is_not_taken_and_what_is_recent() {
        let dir = tempfile::tempdir().unwrap();
        let file = |n: u64, lines: &[(u64, i64)]| {
            let text: String = lines.iter().map(|(i, t)| line(*i, *t)).collect();
            std::fs::write(dir.path().join(format!("events-{n:08}.jsonl")), text).unwrap();
        };
        file(1, &[(1, 100), (2, 110)]);
        file(2, &[(5, 200), (6, 210)]);
        file(3, &[(9, 300)]);
        // Everything old, but the endpoints took only up to 5: file 1 goes, file 2 stays.
        let p = prune(dir.path(), 1000, 5, u64::MAX).unwrap();
        assert_eq!((p.files, p.undelivered), (1, 0));
        // All taken; file 2 is recent: stays.
        let p = prune(dir.path(), 205, 100, u64::MAX).unwrap();
        assert_eq!(p.files, 0);
        // Past the size bound: file 2 goes though its event 6 was not taken; never file 3.
        let p = prune(dir.path(), 0, 5, 1).unwrap();
        assert_eq!((p.files, p.undelivered), (1, 1));
        let p = prune(dir.path(), i64::MAX, u64::MAX, 0).unwrap();
        assert_eq!(p.files, 0, "the newest file is never removed");
        let (events, _) = read(dir.path(), &Filter::default(), 10).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["id"], 9);
    }

    #[test]
    fn the_newest_events_come_from_the_end_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let file = |n: u64, text: String| {
            std::fs::write(dir.path().join(format!("events-{n:08}.jsonl")), text).unwrap();
        };
        file(1, line(1, 100) + &line(2, 110));
        file(2, line(5, 200) + &line(6, 210));
        // A line the follower is still writing is not read.
        file(3, line(9, 300) + "{\"seq\":10,\"id\":10");
        let ids = |f: &Filter, n| {
            let (events, newest) = read_newest(dir.path(), f, n).unwrap();
            let ids: Vec<u64> = events.iter().map(|e| e["id"].as_u64().unwrap()).collect();
            (ids, newest)
        };
        assert_eq!(ids(&Filter::default(), 3), (vec![5, 6, 9], 9));
        assert_eq!(ids(&Filter::default(), 100), (vec![1, 2, 5, 6, 9], 9));
        let after = Filter {
            after: 5,
            ..Filter::default()
        };
        assert_eq!(ids(&after, 100), (vec![6, 9], 9));
        let other = Filter {
            tenant: Some("u".into()),
            ..Filter::default()
        };
        assert_eq!(
            ids(&other, 100),
            (vec![], 9),
            "none wanted; still the newest id"
        );
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            read_newest(empty.path(), &Filter::default(), 5)
                .unwrap()
                .0
                .len(),
            0
        );
    }
}
