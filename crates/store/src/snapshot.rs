//! Snapshots of the ledger, so that replay stays short: every counter of every account, the
//! reservations still open, and the journal sequence they include. Written to a temporary file,
//! synced, renamed over `state_dir/snapshot`, and the directory synced, so a crash leaves
//! either the old snapshot or the new one. Checksummed; this build writes format version 5 and
//! reads versions 1 to 5 (below). FROZEN like the journal's records.
//!
//! A snapshot names how many account changes (the change log, `changes`) it includes.
//! On loading, those changes are replayed first; if the tree they build has the snapshot's
//! fingerprint, accounts are matched by index. Otherwise (a version 1 snapshot, from before the
//! change log, or a tree that was rebuilt differently) they are matched by tree name and node
//! path, and journal records (which name accounts by index) can only be replayed on top if
//! nothing moved.
//!
//! Version 2 adds `changes:u64` after the fingerprint; version 1 is read as `changes = 1`
//! (the provisioning it was taken with). Version 3 adds each node's own usage after its
//! counters (`own_count:u8`, each `unit:u8 day:u64 month:u64 total:u64 day_end:i64
//! month_end:i64`) and, after the reservations, the credit-control sessions
//! (`count:u32`, each `length:u32` and a session's state as `ocf_charging::engine::session`
//! writes it), so that open sessions outlive a restart. Each node's reserved units are the sum of the open
//! reservations of its subtree, rebuilt from the reservations on loading.
//!
//! Version 4 adds, after the header, the accounts' default threshold levels (`count:u8`, each
//! `kind:u8 value:u64`: 1 a percentage, 2 an amount) and, after each counter's `period_end`,
//! the thresholds that fired in its period (`fired:u16 fired_default:u8`). Loaded with other
//! default levels than it names, or from an older version, the levels usage already reached
//! count as fired (nothing fires twice; a level passed before counts as passed).
//!
//! Version 5 adds each counter's service class (`class:u32` after its period code; 0: a
//! general limit) and each open reservation's classes (`class:u32 class:u32` after its
//! unit). A counter is matched by unit, period and class; older versions' are general.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Buf;
use ocf_charging::ledger::{AccountRef, Classes, Ledger, Level, OwnUsage, Period, unit_index};

use ocf_charging::engine::recorder::{Outstanding, unit_code, unit_from};

const MAGIC: &[u8; 4] = b"OCFS";
const VERSION: u32 = 5;

/// What a snapshot holds besides the counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The last journal sequence whose effect the snapshot includes.
    pub sequence: u64,
    pub next_reservation: u64,
    pub outstanding: Vec<Outstanding>,
    /// Fingerprint of the provisioning (tree and node names and shape) it was taken with.
    pub fingerprint: u64,
    /// Account changes it includes: the first `changes` of the change log.
    pub changes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{file}: {source}")]
    Io { file: PathBuf, source: io::Error },
    #[error("{file}: {reason}")]
    Corrupt { file: PathBuf, reason: String },
}

fn period_code(p: Period) -> u8 {
    match p {
        Period::Day => 0,
        Period::Month => 1,
        Period::Total => 2,
    }
}

fn level_code(l: Level) -> (u8, u64) {
    match l {
        Level::Percent(p) => (1, u64::from(p)),
        Level::Amount(a) => (2, a),
    }
}

fn level_from(kind: u8, value: u64) -> Option<Level> {
    match (kind, value) {
        (1, p @ 1..=100) => Some(Level::Percent(p as u8)),
        (2, a) => Some(Level::Amount(a)),
        _ => None,
    }
}

fn period_from(c: u8) -> Option<Period> {
    Some(match c {
        0 => Period::Day,
        1 => Period::Month,
        2 => Period::Total,
        _ => return None,
    })
}

/// A stable fingerprint of the provisioning: tree names, node names and parents.
pub fn fingerprint(ledger: &Ledger) -> u64 {
    // FNV-1a: stable across builds and platforms (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    };
    for t in 0..ledger.tree_count() as u32 {
        let Some(tree) = ledger.lock(t) else { continue };
        eat(tree.name.as_bytes());
        eat(&[0xff]);
        eat(&[u8::from(tree.removed)]);
        for n in &tree.nodes {
            eat(n.name.as_bytes());
            eat(&n.parent.unwrap_or(u32::MAX).to_le_bytes());
            eat(&[u8::from(n.removed)]);
        }
    }
    h
}

/// Writes a string as a u16 length and UTF-8 octets (cut at 65535 octets).
fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    out.extend_from_slice(&(b.len().min(u16::MAX as usize) as u16).to_le_bytes());
    out.extend_from_slice(&b[..b.len().min(u16::MAX as usize)]);
}

/// Reads what [`put_str`] writes (`bytes` has no length-prefixed strings); `None` if cut
/// short or not UTF-8.
fn get_str(r: &mut &[u8]) -> Option<String> {
    let n = usize::from(r.try_get_u16_le().ok()?);
    let (s, rest) = r.split_at_checked(n)?;
    *r = rest;
    String::from_utf8(s.to_vec()).ok()
}

/// Encodes the ledger, `info` and `session_count` sessions, which `sessions` hands to the
/// function it is given one by one (each a session's state as
/// `charging::session::encode_state` writes it). The caller makes sure nothing changes
/// meanwhile.
pub fn encode(
    ledger: &Ledger,
    info: &SnapshotInfo,
    session_count: usize,
    sessions: impl FnOnce(&mut dyn FnMut(&[u8])),
) -> Vec<u8> {
    // About what a session takes (with its compact last answer), so that ten million are
    // not copied again and again as the buffer doubles.
    let mut out = Vec::with_capacity((1 << 20) + session_count.saturating_mul(160));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&info.sequence.to_le_bytes());
    out.extend_from_slice(&info.next_reservation.to_le_bytes());
    out.extend_from_slice(&info.fingerprint.to_le_bytes());
    out.extend_from_slice(&info.changes.to_le_bytes());
    let levels = ledger.default_levels();
    out.push(levels.len().min(255) as u8);
    for l in levels.iter().take(255) {
        let (kind, value) = level_code(*l);
        out.push(kind);
        out.extend_from_slice(&value.to_le_bytes());
    }
    out.extend_from_slice(&(ledger.tree_count() as u32).to_le_bytes());
    for t in 0..ledger.tree_count() as u32 {
        let Some(tree) = ledger.lock(t) else { continue };
        put_str(&mut out, &tree.name);
        out.extend_from_slice(&(tree.nodes.len() as u32).to_le_bytes());
        for n in &tree.nodes {
            put_str(&mut out, &n.name);
            out.extend_from_slice(&n.parent.unwrap_or(u32::MAX).to_le_bytes());
            out.push(n.counters.len().min(255) as u8);
            for c in n.counters.iter().take(255) {
                out.push(unit_code(c.unit));
                out.push(period_code(c.period));
                out.extend_from_slice(&c.class.to_le_bytes());
                out.extend_from_slice(&c.used.to_le_bytes());
                out.extend_from_slice(&c.reserved.to_le_bytes());
                out.extend_from_slice(&c.rated.to_le_bytes());
                out.extend_from_slice(&c.period_end.to_le_bytes());
                out.extend_from_slice(&c.fired.to_le_bytes());
                out.push(c.fired_default);
            }
            out.push(n.own.len().min(255) as u8);
            for o in n.own.iter().take(255) {
                out.push(unit_code(o.unit));
                for v in o.used {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                for e in o.ends {
                    out.extend_from_slice(&e.to_le_bytes());
                }
            }
        }
    }
    out.extend_from_slice(&(info.outstanding.len() as u32).to_le_bytes());
    for o in &info.outstanding {
        out.extend_from_slice(&o.id.to_le_bytes());
        out.extend_from_slice(&o.account.tree.to_le_bytes());
        out.extend_from_slice(&o.account.node.to_le_bytes());
        out.push(unit_code(o.unit));
        for c in o.classes.0 {
            out.extend_from_slice(&c.to_le_bytes());
        }
        out.extend_from_slice(&o.amount.to_le_bytes());
        out.extend_from_slice(&o.expires.to_le_bytes());
    }
    out.extend_from_slice(&(session_count as u32).to_le_bytes());
    sessions(&mut |s: &[u8]| {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s);
    });
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The checked body of a snapshot and its header, before any account is read.
pub struct Header<'a> {
    pub info: SnapshotInfo,
    version: u32,
    rest: &'a [u8],
}

impl Header<'_> {
    /// The snapshot's format version.
    pub fn version(&self) -> u32 {
        self.version
    }
}

/// A snapshot's format version and the account changes it includes, read from its first
/// octets alone (no checksum): what a start needs to know before the whole file is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peek {
    pub version: u32,
    pub changes: u64,
}

/// Peeks at the snapshot `file`: `Ok(None)` if there is none, `Some(None)` if its first octets
/// are no snapshot header (reading it whole says why).
fn peek(file: &Path) -> Result<Option<Option<Peek>>, SnapshotError> {
    use std::io::Read;
    let mut f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SnapshotError::Io {
                file: file.into(),
                source,
            });
        }
    };
    // Magic, version, sequence, next reservation, fingerprint, changes.
    let mut head = [0u8; 4 + 4 + 8 * 4];
    let mut got = 0;
    while got < head.len() {
        match f.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(SnapshotError::Io {
                    file: file.into(),
                    source,
                });
            }
        }
    }
    let mut r = &head[..got];
    let parsed = (|| {
        let (magic, rest) = r.split_at_checked(4)?;
        if magic != MAGIC {
            return None;
        }
        r = rest;
        let version = r.try_get_u32_le().ok()?;
        r.try_get_u64_le().ok()?;
        r.try_get_u64_le().ok()?;
        r.try_get_u64_le().ok()?;
        let changes = if version == 1 {
            1
        } else {
            r.try_get_u64_le().ok()?
        };
        Some(Peek { version, changes })
    })();
    Ok(Some(parsed))
}

/// A snapshot file read whole on a thread of its own, so that a start can rebuild the
/// accounts meanwhile; its header is peeked at first, and checked against the whole file's.
pub struct Reading {
    file: PathBuf,
    peek: Option<Peek>,
    thread: Option<std::thread::JoinHandle<io::Result<Vec<u8>>>>,
    data: Option<Vec<u8>>,
}

impl Reading {
    /// Starts reading `file`, if there is one. A file whose first octets are no snapshot
    /// header is read and checked at once, so that the error says why.
    pub fn start(file: &Path) -> Result<Self, SnapshotError> {
        let io = |source| SnapshotError::Io {
            file: file.into(),
            source,
        };
        let mut r = Reading {
            file: file.into(),
            peek: None,
            thread: None,
            data: None,
        };
        match peek(file)? {
            None => {}
            Some(Some(p)) => {
                let path = file.to_path_buf();
                let spawned = std::thread::Builder::new()
                    .name("snapshot-read".into())
                    .spawn(move || fs::read(path));
                r.thread = Some(spawned.map_err(io)?);
                r.peek = Some(p);
            }
            Some(None) => {
                let data = fs::read(file).map_err(io)?;
                let h = header(&data, file)?;
                r.peek = Some(Peek {
                    version: h.version(),
                    changes: h.info.changes,
                });
                r.data = Some(data);
            }
        }
        Ok(r)
    }

    /// The version and included changes of the snapshot, if there is one (not yet checked).
    pub fn peek(&self) -> Option<Peek> {
        self.peek
    }

    /// Waits for the whole file and checks its checksum and that its header is the one peeked.
    pub fn check(&mut self) -> Result<(), SnapshotError> {
        self.header().map(|_| ())
    }

    /// Waits for the whole file, checks it, and reads its header.
    pub fn header(&mut self) -> Result<Option<Header<'_>>, SnapshotError> {
        if let Some(t) = self.thread.take() {
            let io = |source| SnapshotError::Io {
                file: self.file.clone(),
                source,
            };
            let data = t
                .join()
                .map_err(|_| io(io::Error::other("the thread reading it failed")))?
                .map_err(io)?;
            self.data = Some(data);
        }
        let Some(data) = self.data.as_deref() else {
            return Ok(None);
        };
        let h = header(data, &self.file)?;
        let read = Peek {
            version: h.version(),
            changes: h.info.changes,
        };
        if self.peek != Some(read) {
            return Err(SnapshotError::Corrupt {
                file: self.file.clone(),
                reason: "it changed while it was read".into(),
            });
        }
        Ok(Some(h))
    }
}

/// Checks a snapshot's checksum and reads its header.
pub fn header<'a>(data: &'a [u8], file: &Path) -> Result<Header<'a>, SnapshotError> {
    let corrupt = |reason: &str| SnapshotError::Corrupt {
        file: file.into(),
        reason: reason.into(),
    };
    if data.len() < 12 || &data[..4] != MAGIC {
        return Err(corrupt("not a snapshot"));
    }
    let (body, crc) = data.split_at(data.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(corrupt("checksum mismatch"));
    }
    let mut r = &body[4..];
    let short = |_: bytes::TryGetError| corrupt("cut short");
    let version = r.try_get_u32_le().map_err(short)?;
    if !(1..=VERSION).contains(&version) {
        return Err(corrupt("unknown snapshot version"));
    }
    let sequence = r.try_get_u64_le().map_err(short)?;
    let next_reservation = r.try_get_u64_le().map_err(short)?;
    let fingerprint = r.try_get_u64_le().map_err(short)?;
    let changes = if version == 1 {
        1
    } else {
        r.try_get_u64_le().map_err(short)?
    };
    Ok(Header {
        info: SnapshotInfo {
            sequence,
            next_reservation,
            outstanding: Vec::new(),
            fingerprint,
            changes,
        },
        version,
        rest: r,
    })
}

/// What a snapshot restores besides the ledger and the sessions.
pub struct Loaded {
    pub info: SnapshotInfo,
    /// Counters (and own usages) of accounts no longer there.
    pub dropped: usize,
    /// Sessions open or lingering when it was taken (handed to `restore`).
    pub sessions: usize,
}

/// Applies a snapshot to the ledger. `by_index`: the ledger was rebuilt to the very tree the
/// snapshot was taken of (the fingerprints match), so accounts are matched by index; else by
/// tree name and node path, and counters of accounts no longer there are dropped (and
/// counted in the result).
pub fn apply(
    ledger: &Ledger,
    header: Header<'_>,
    file: &Path,
    by_index: bool,
    expect: impl FnOnce(usize),
    mut restore: impl FnMut(ocf_charging::engine::session::Restored),
) -> Result<Loaded, SnapshotError> {
    let corrupt = |reason: &str| SnapshotError::Corrupt {
        file: file.into(),
        reason: reason.into(),
    };
    let cut_short = || corrupt("cut short");
    let short = |_: bytes::TryGetError| cut_short();
    let Header {
        info,
        version,
        rest: mut r,
    } = header;
    let SnapshotInfo {
        sequence,
        next_reservation,
        fingerprint,
        changes,
        ..
    } = info;
    let trees: HashMap<String, u32> = (0..ledger.tree_count() as u32)
        .filter_map(|t| {
            ledger
                .lock(t)
                .filter(|g| !g.removed)
                .map(|g| (g.name.clone(), t))
        })
        .collect();
    let mut dropped = 0usize;
    // The fired bits of default levels hold only for the levels they were kept for.
    let mut same_levels = false;
    if version >= 4 {
        let mut levels = Vec::new();
        for _ in 0..r.try_get_u8().map_err(short)? {
            let (kind, value) = (
                r.try_get_u8().map_err(short)?,
                r.try_get_u64_le().map_err(short)?,
            );
            levels.push(level_from(kind, value).ok_or_else(|| corrupt("bad threshold level"))?);
        }
        same_levels = *levels == *ledger.default_levels();
    }
    // Snapshot tree index -> current tree index, and per tree snapshot node -> current node.
    let mut tree_map: Vec<Option<u32>> = Vec::new();
    let mut node_maps: Vec<Vec<Option<u32>>> = Vec::new();
    for tree_index in 0..r.try_get_u32_le().map_err(short)? {
        let name = get_str(&mut r).ok_or_else(cut_short)?;
        let current = if by_index {
            Some(tree_index).filter(|&t| (t as usize) < ledger.tree_count())
        } else {
            trees.get(&name).copied()
        };
        let mut guard = current.and_then(|t| ledger.lock(t));
        // (current parent, name) -> current node, for matching by path.
        let children: HashMap<(u32, String), u32> = guard
            .as_ref()
            .map(|g| {
                g.nodes
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| !n.removed)
                    .map(|(i, n)| ((n.parent.unwrap_or(u32::MAX), n.name.clone()), i as u32))
                    .collect()
            })
            .unwrap_or_default();
        let mut map: Vec<Option<u32>> = Vec::new();
        for _ in 0..r.try_get_u32_le().map_err(short)? {
            let node_name = get_str(&mut r).ok_or_else(cut_short)?;
            let parent = r.try_get_u32_le().map_err(short)?;
            let cur_parent = if parent == u32::MAX {
                Some(u32::MAX)
            } else {
                map.get(parent as usize).copied().flatten()
            };
            let index = map.len() as u32;
            let cur = if by_index {
                guard
                    .as_ref()
                    .filter(|g| (index as usize) < g.nodes.len())
                    .map(|_| index)
            } else {
                cur_parent.and_then(|p| children.get(&(p, node_name)).copied())
            };
            map.push(cur);
            for _ in 0..r.try_get_u8().map_err(short)? {
                let unit =
                    unit_from(r.try_get_u8().map_err(short)?).ok_or_else(|| corrupt("bad unit"))?;
                let period = period_from(r.try_get_u8().map_err(short)?)
                    .ok_or_else(|| corrupt("bad period"))?;
                let class = if version >= 5 {
                    r.try_get_u32_le().map_err(short)?
                } else {
                    0
                };
                let (used, reserved, rated, period_end) = (
                    r.try_get_u64_le().map_err(short)?,
                    r.try_get_u64_le().map_err(short)?,
                    r.try_get_u128_le().map_err(short)?,
                    r.try_get_i64_le().map_err(short)?,
                );
                let fired = if version >= 4 {
                    Some((
                        r.try_get_u16_le().map_err(short)?,
                        r.try_get_u8().map_err(short)?,
                    ))
                } else {
                    None
                };
                let target = match (&mut guard, cur) {
                    (Some(g), Some(n)) => g.nodes[n as usize]
                        .counters
                        .iter_mut()
                        .find(|c| c.unit == unit && c.period == period && c.class == class),
                    _ => None,
                };
                match target {
                    Some(c) => {
                        c.used = used;
                        c.reserved = reserved;
                        c.rated = rated;
                        c.period_end = period_end;
                        if let Some((own, default)) = fired {
                            c.fired = own;
                            c.fired_default = default;
                        }
                    }
                    None => dropped += 1,
                }
            }
            if let (Some(g), Some(n)) = (&mut guard, cur) {
                if version < 4 || !same_levels {
                    g.settle_fired(n, version < 4, true);
                }
            }
            if version < 3 {
                continue;
            }
            for _ in 0..r.try_get_u8().map_err(short)? {
                let unit =
                    unit_from(r.try_get_u8().map_err(short)?).ok_or_else(|| corrupt("bad unit"))?;
                let mut own = OwnUsage {
                    unit,
                    used: [0; 3],
                    ends: [0; 2],
                };
                for v in &mut own.used {
                    *v = r.try_get_u64_le().map_err(short)?;
                }
                for e in &mut own.ends {
                    *e = r.try_get_i64_le().map_err(short)?;
                }
                match (&mut guard, cur) {
                    (Some(g), Some(n)) => {
                        let node = &mut g.nodes[n as usize];
                        node.own.retain(|o| o.unit != unit);
                        node.own.push(own);
                    }
                    _ => dropped += 1,
                }
            }
        }
        tree_map.push(current);
        node_maps.push(map);
    }
    let map = |tree: u32, node: u32| -> Option<AccountRef> {
        let cur_tree = tree_map.get(tree as usize).copied().flatten()?;
        let cur_node = node_maps
            .get(tree as usize)
            .and_then(|m| m.get(node as usize))
            .copied()
            .flatten()?;
        Some(AccountRef {
            tree: cur_tree,
            node: cur_node,
        })
    };
    let mut outstanding = Vec::new();
    for _ in 0..r.try_get_u32_le().map_err(short)? {
        let id = r.try_get_u64_le().map_err(short)?;
        let (tree, node) = (
            r.try_get_u32_le().map_err(short)?,
            r.try_get_u32_le().map_err(short)?,
        );
        let unit = unit_from(r.try_get_u8().map_err(short)?).ok_or_else(|| corrupt("bad unit"))?;
        let classes = if version >= 5 {
            Classes([
                r.try_get_u32_le().map_err(short)?,
                r.try_get_u32_le().map_err(short)?,
            ])
        } else {
            Classes::NONE
        };
        let (amount, expires) = (
            r.try_get_u64_le().map_err(short)?,
            r.try_get_i64_le().map_err(short)?,
        );
        if let Some(account) = map(tree, node) {
            outstanding.push(Outstanding {
                id,
                account,
                unit,
                classes,
                amount,
                expires,
            });
        }
    }
    // Each node holds what the open reservations of its subtree hold.
    for o in &outstanding {
        if let Some(mut t) = ledger.lock(o.account.tree) {
            let mut at = Some(o.account.node);
            while let Some(n) = at {
                let Some(node) = t.nodes.get_mut(n as usize) else {
                    break;
                };
                let k = unit_index(o.unit);
                node.reserved[k] = node.reserved[k].saturating_add(o.amount);
                at = node.parent;
            }
        }
    }
    // Sessions go straight to `restore`, each as it is read, not gathered first.
    let mut sessions = 0;
    if version >= 3 {
        let count = r.try_get_u32_le().map_err(short)?;
        // Room for them at once (a session takes at least its four-octet length, so a
        // damaged count cannot ask for more than the file could hold).
        expect((count as usize).min(r.len() / 4));
        for _ in 0..count {
            let n = r.try_get_u32_le().map_err(short)? as usize;
            let (data, rest) = r.split_at_checked(n).ok_or_else(cut_short)?;
            r = rest;
            let mut s = ocf_charging::engine::session::decode_state(data)
                .ok_or_else(|| corrupt("a session does not read back"))?;
            // A lingering session names no account; an open one's must still be there.
            if !s.ended {
                match map(s.session.account.tree, s.session.account.node) {
                    Some(account) => s.session.account = account,
                    None => {
                        dropped += 1;
                        continue;
                    }
                }
            }
            restore(s);
            sessions += 1;
        }
    }
    if !r.is_empty() {
        return Err(corrupt("trailing data"));
    }
    Ok(Loaded {
        info: SnapshotInfo {
            sequence,
            next_reservation,
            outstanding,
            fingerprint,
            changes,
        },
        dropped,
        sessions,
    })
}

/// Removes the journal segments whose every record the snapshot includes (never the last).
pub fn remove_covered_segments(journal: &Path, sequence: u64) -> io::Result<usize> {
    let segs = crate::segment::list(journal)?;
    let mut removed = 0;
    for pair in segs.windows(2) {
        // Segment i holds [first_i, first_{i+1} - 1].
        if pair[1].0 <= sequence + 1 {
            fs::remove_file(&pair[0].1)?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ocf_charging::accounts::provisioning::default_tenant;
    use ocf_charging::ledger::Unit;

    fn load(l: &Ledger, d: &[u8], by_index: bool) -> Result<(SnapshotInfo, usize), SnapshotError> {
        header(d, Path::new("s"))
            .and_then(|h| apply(l, h, Path::new("s"), by_index, |_| {}, |_| {}))
            .map(|l| (l.info, l.dropped))
    }

    /// A tree with a general and a class limit on one device, as its provisioning builds it.
    fn classed() -> Ledger {
        let l = Ledger::new();
        let mut t = ocf_charging::ledger::Tree::new("c", jiff::tz::TimeZone::UTC);
        let mut video = ocf_charging::ledger::Counter::new(Unit::Octets, Period::Month, 500);
        video.class = 42;
        t.add(
            "c",
            None,
            vec![
                ocf_charging::ledger::Counter::new(Unit::Octets, Period::Month, 1000),
                video,
            ],
        );
        l.add_tree(t);
        l
    }

    #[test]
    fn class_limits_and_reservations_keep_their_classes() {
        let ledger = classed();
        let at = AccountRef { tree: 0, node: 0 };
        let video = (Unit::Octets, Classes([42, 0]));
        ledger.commit_in(at, video, 0, 100, 1_795_000_000);
        let g = ledger.reserve_in(at, video, 50, 1_795_000_000);
        ledger.commit(at, Unit::Octets, 0, 7, 1_795_000_000);
        let info = SnapshotInfo {
            sequence: 1,
            next_reservation: 2,
            outstanding: vec![Outstanding {
                id: 1,
                account: at,
                unit: Unit::Octets,
                classes: Classes([42, 0]),
                amount: g.granted,
                expires: 5,
            }],
            fingerprint: fingerprint(&ledger),
            changes: 1,
        };
        let data = encode(&ledger, &info, 0, |_| {});
        let fresh = classed();
        let (back, dropped) = load(&fresh, &data, true).unwrap();
        assert_eq!((back, dropped), (info, 0));
        let t = fresh.lock(0).unwrap();
        let c = &t.nodes[0].counters;
        assert_eq!(
            (c[0].used, c[0].reserved),
            (107, 50),
            "the general limit counts all"
        );
        assert_eq!((c[1].used, c[1].reserved, c[1].class), (100, 50, 42));
    }

    #[test]
    fn snapshot_round_trips_and_matches_accounts_by_name() {
        let (ledger, dir) = default_tenant();
        let iot = dir
            .lookup(
                ocf_charging::accounts::tenant::SubscriptionType::E164,
                "15551008000",
            )
            .unwrap();
        ledger.commit(iot, Unit::Octets, 0, 1234, 1_795_000_000);
        let g = ledger.reserve(iot, Unit::Octets, 100, 1_795_000_000);
        let alice = dir
            .lookup(
                ocf_charging::accounts::tenant::SubscriptionType::E164,
                "15559990001",
            )
            .unwrap();
        ledger.commit_rated(alice, 0, 1 << 20, (10_000_000, 1 << 20), 1_795_000_000);
        let info = SnapshotInfo {
            sequence: 77,
            next_reservation: 9,
            outstanding: vec![Outstanding {
                id: 8,
                account: iot,
                unit: Unit::Octets,
                classes: Classes::NONE,
                amount: g.granted,
                expires: 5,
            }],
            fingerprint: fingerprint(&ledger),
            changes: 3,
        };
        let data = encode(&ledger, &info, 0, |_| {});

        let (fresh, _) = default_tenant();
        for by_index in [true, false] {
            let (fresh, _) = default_tenant();
            let (back, dropped) = load(&fresh, &data, by_index).unwrap();
            assert_eq!((back.clone(), dropped), (info.clone(), 0));
            for t in 0..2 {
                let (a, b) = (ledger.lock(t).unwrap(), fresh.lock(t).unwrap());
                for (x, y) in a.nodes.iter().zip(&b.nodes) {
                    assert_eq!(x.counters, y.counters);
                }
            }
        }
        let (back, _) = load(&fresh, &data, false).unwrap();
        assert_eq!(back, info);
        for t in 0..2 {
            let (a, b) = (ledger.lock(t).unwrap(), fresh.lock(t).unwrap());
            for (x, y) in a.nodes.iter().zip(&b.nodes) {
                assert_eq!(x.counters, y.counters);
            }
        }
        assert_eq!(fingerprint(&fresh), info.fingerprint);

        // A changed provisioning: alice first, acme second, an extra tenant. Accounts are found
        // by name; the fingerprint tells the change.
        let other = Ledger::new();
        let mut alice_tree = ocf_charging::ledger::Tree::new("alice", jiff::tz::TimeZone::UTC);
        alice_tree.add(
            "alice",
            None,
            vec![ocf_charging::ledger::Counter::new(
                Unit::Money,
                Period::Total,
                5,
            )],
        );
        other.add_tree(alice_tree);
        let (acme_only, _) = default_tenant();
        let acme = acme_only.lock(0).unwrap().clone();
        other.add_tree(acme);
        let (back2, dropped2) = load(&other, &data, false).unwrap();
        assert_eq!(dropped2, 0);
        assert_ne!(fingerprint(&other), info.fingerprint);
        assert_eq!(
            back2.outstanding[0].account.tree, 1,
            "acme moved to index 1"
        );
        assert_eq!(other.lock(0).unwrap().nodes[0].counters[0].used, 10_000_000);
        assert_eq!(
            other.lock(1).unwrap().nodes[iot.node as usize].counters[0].used,
            1234
        );
    }

    #[test]
    fn damaged_snapshots_are_refused() {
        let (ledger, _) = default_tenant();
        let data = encode(&ledger, &SnapshotInfo::default(), 0, |_| {});
        for i in [0, 5, 100, data.len() / 2, data.len() - 1] {
            let mut d = data.clone();
            d[i] ^= 1;
            let (fresh, _) = default_tenant();
            assert!(load(&fresh, &d, false).is_err(), "flipped byte {i}");
        }
        let (fresh, _) = default_tenant();
        assert!(load(&fresh, &data[..data.len() - 10], false).is_err());
    }
}
