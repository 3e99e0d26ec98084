//! Segment files: `journal/<first sequence, 20 digits>.seg`, each a 16-octet header
//! (`OCFJ`, format version u32le = 1, first sequence u64le) followed by records
//! ([`super::record`]). Segments are append-only; a new one starts when the current one passes
//! its size limit.
//!
//! Reading tells a torn tail (the last write of a crashed process: an incomplete record, or
//! zeros, at the end of the last segment) from corruption (anything else that does not read
//! back: a bad checksum before the end, a gap in sequence numbers, a broken segment header),
//! which stops recovery with the file and offset.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::record::{self, Next, Record};

pub(crate) const MAGIC: &[u8; 4] = b"OCFJ";
/// The version new segments are written in (older segments are read in theirs).
pub const VERSION: u32 = record::VERSION;
pub(crate) const SEGMENT_HEADER: usize = 16;

/// The path of the segment starting at `first`.
pub fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

/// Segment files in `dir`, by first sequence.
pub fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut v = Vec::new();
    match fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let path = e?.path();
                let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if let Some(first) = name
                    .strip_suffix(".seg")
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    v.push((first, path));
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    v.sort();
    Ok(v)
}

fn header(first: u64) -> [u8; SEGMENT_HEADER] {
    header_of(first, VERSION)
}

fn header_of(first: u64, version: u32) -> [u8; SEGMENT_HEADER] {
    let mut h = [0u8; SEGMENT_HEADER];
    h[..4].copy_from_slice(MAGIC);
    h[4..8].copy_from_slice(&version.to_le_bytes());
    h[8..].copy_from_slice(&first.to_le_bytes());
    h
}

/// The version a segment header names, if it is a header for a segment starting at `first`
/// of a version this build reads.
fn header_version(data: &[u8], first: u64) -> Option<u32> {
    let h = data.get(..SEGMENT_HEADER)?;
    let version = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    (record::max_body(version) > 0 && h == header_of(first, version)).then_some(version)
}

/// Where and why the journal cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{file}: offset {offset}: {reason}")]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{file}: {source}")]
    Io { file: PathBuf, source: io::Error },
}

/// What reading found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReadSummary {
    pub records: u64,
    pub last_sequence: Option<u64>,
    /// A torn tail that was cut off: (file, offset it was truncated to, octets dropped).
    pub truncated: Option<(PathBuf, u64, u64)>,
}

/// Reads every record with a sequence number above `after`, in order, passing each to `f`.
/// A torn tail of the last segment is truncated when `repair` is set (the normal start-up);
/// without it, the tail is only reported.
pub fn read_all(
    dir: &Path,
    after: u64,
    repair: bool,
    mut f: impl FnMut(&Record),
) -> Result<ReadSummary, ReadError> {
    let segments = list(dir).map_err(|source| ReadError::Io {
        file: dir.into(),
        source,
    })?;
    // The last segment written must still be there: without it the journal would end early
    // without a sign (the manifest is only stale if a later segment exists).
    if let Some(m) = read_manifest(dir)? {
        if !segments.iter().any(|(first, _)| *first >= m) {
            return Err(ReadError::Corrupt {
                file: dir.join(MANIFEST),
                offset: 0,
                reason: format!(
                    "the segment being written last, {}, is missing: the records in it are lost unless it is restored",
                    segment_path(dir, m).display()
                ),
            });
        }
    }
    let mut summary = ReadSummary::default();
    let mut expected: Option<u64> = None;
    // The first record after `after` must be the one right after it.
    let mut continued = false;
    let count = segments.len();
    for (i, (first, path)) in segments.into_iter().enumerate() {
        let last_segment = i + 1 == count;
        let io_err = |source| ReadError::Io {
            file: path.clone(),
            source,
        };
        let data = fs::read(&path).map_err(io_err)?;
        let corrupt = |offset: usize, reason: String| ReadError::Corrupt {
            file: path.clone(),
            offset: offset as u64,
            reason,
        };
        if data.len() < SEGMENT_HEADER {
            if last_segment
                && (data.iter().all(|&b| b == 0)
                    || [1, VERSION]
                        .iter()
                        .any(|&v| header_of(first, v).starts_with(&data)))
            {
                // Created but never written: nothing to read.
                if repair {
                    fs::remove_file(&path).map_err(io_err)?;
                }
                summary.truncated = Some((path.clone(), 0, data.len() as u64));
                break;
            }
            return Err(corrupt(0, "segment header cut short".into()));
        }
        let Some(version) = header_version(&data, first) else {
            return Err(corrupt(
                0,
                "segment header does not match its name (magic, version, first sequence)".into(),
            ));
        };
        // A segment that starts at or before what the caller already has (a snapshot) may
        // follow a gap: the records in between were in the snapshot, not in the journal.
        if let Some(e) = expected.filter(|_| first > after + 1) {
            if e != first {
                return Err(corrupt(
                    0,
                    format!("sequence gap: expected {e}, segment starts at {first}"),
                ));
            }
        }
        expected = Some(first);
        let mut pos = SEGMENT_HEADER;
        while pos < data.len() {
            match record::next(&data[pos..], version) {
                Next::Record(r, len) => {
                    if Some(r.sequence) != expected {
                        return Err(corrupt(
                            pos,
                            format!(
                                "sequence {} where {} was expected",
                                r.sequence,
                                expected.unwrap_or(0)
                            ),
                        ));
                    }
                    expected = Some(r.sequence + 1);
                    if r.sequence > after && !continued {
                        continued = true;
                        if r.sequence != after + 1 {
                            return Err(corrupt(
                                pos,
                                if after == 0 {
                                    format!(
                                        "the journal starts at sequence {} and no snapshot covers what came before: the snapshot or the segments before this one are missing",
                                        r.sequence
                                    )
                                } else {
                                    format!(
                                        "the snapshot covers records up to {after} but the journal goes on at {}: the segment(s) in between are missing",
                                        r.sequence
                                    )
                                },
                            ));
                        }
                    }
                    if r.sequence > after {
                        f(&r);
                        summary.records += 1;
                    }
                    summary.last_sequence = Some(r.sequence);
                    pos += len;
                }
                Next::Incomplete | Next::Corrupt(_)
                    if last_segment
                        && is_torn_tail(&data[pos..], version, expected.unwrap_or(first)) =>
                {
                    let dropped = (data.len() - pos) as u64;
                    if repair {
                        let file = OpenOptions::new().write(true).open(&path).map_err(io_err)?;
                        file.set_len(pos as u64).map_err(io_err)?;
                        file.sync_all().map_err(io_err)?;
                    }
                    summary.truncated = Some((path.clone(), pos as u64, dropped));
                    break;
                }
                Next::Incomplete => {
                    return Err(corrupt(
                        pos,
                        "record cut short before the end of the journal".into(),
                    ));
                }
                Next::Corrupt(why) => return Err(corrupt(pos, why.into())),
            }
        }
    }
    Ok(summary)
}

/// The end of the last segment after a crash: zeros (a file system that extended the file
/// before the data reached it), a record cut short (its length, in range, runs past the end),
/// or one last record whose checksum fails with nothing but zeros after it. Anything else,
/// such as a length out of range or a bad record followed by data, is corruption; so is a
/// damaged length that only seems to run past the end while whole records of the sequences
/// expected next follow it.
fn is_torn_tail(rest: &[u8], version: u32, expected: u64) -> bool {
    if rest.iter().all(|&b| b == 0) {
        return true;
    }
    if later_record_follows(rest, version, expected) {
        return false;
    }
    let Some(head) = rest.first_chunk::<{ record::FRAME_HEADER }>() else {
        return true;
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if !(record::BODY_HEADER + 1..=record::max_body(version)).contains(&len) {
        return false;
    }
    let end = record::FRAME_HEADER + len;
    end > rest.len() || rest[end..].iter().all(|&b| b == 0)
}

/// Whether a whole, valid record with one of the next few sequences starts somewhere after the
/// first octet of `rest`: then what is at the front is damage, not the end of the writes.
fn later_record_follows(rest: &[u8], version: u32, expected: u64) -> bool {
    const SEQ_AT: usize = record::FRAME_HEADER;
    let next = expected..expected.saturating_add(64);
    rest.windows(8)
        .enumerate()
        .skip(SEQ_AT + 1)
        .any(|(i, w)| {
            let seq = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
            next.contains(&seq)
                && matches!(record::next(&rest[i - SEQ_AT..], version), Next::Record(r, _) if r.sequence == seq)
        })
}

/// Recovery from corruption, for an operator who accepts losing what follows it: reads the
/// journal, and at the first corrupt record moves the damaged segment (as it was) and every
/// later one into `quarantine-<unix time>/`, then writes the damaged segment back cut at the
/// corrupt record. Returns where it cut, or `None` if the journal read cleanly.
/// `after` is the sequence the snapshot includes (0 without one).
pub fn cut_at_corruption(
    dir: &Path,
    after: u64,
    now: i64,
) -> Result<Option<(PathBuf, u64)>, ReadError> {
    let (file, offset) = match read_all(dir, after, true, |_| {}) {
        Ok(_) => return Ok(None),
        Err(ReadError::Corrupt { file, offset, .. }) => (file, offset),
        Err(e) => return Err(e),
    };
    let io = |source| ReadError::Io {
        file: file.clone(),
        source,
    };
    if file == dir.join(MANIFEST) {
        // The last segment is gone: accept the loss, the journal ends with what is there.
        match list(dir).map_err(io)?.last() {
            Some((first, _)) => write_manifest(dir, *first).map_err(io)?,
            None => fs::remove_file(&file).map_err(io)?,
        }
        return Ok(Some((file, 0)));
    }
    let quarantine = dir.join(format!("quarantine-{now}"));
    fs::create_dir_all(&quarantine).map_err(io)?;
    let mut moving = false;
    for (first, path) in list(dir).map_err(io)? {
        if path == file {
            moving = true;
            let data = fs::read(&path).map_err(io)?;
            let name = path.file_name().map(PathBuf::from).unwrap_or_default();
            fs::rename(&path, quarantine.join(name)).map_err(io)?;
            // Cut before its first record, the segment keeps only a (fresh) header: the next
            // record continues its sequence.
            let mut out = File::create(&path).map_err(io)?;
            if (offset as usize) < SEGMENT_HEADER {
                out.write_all(&header(first)).map_err(io)?;
            } else {
                out.write_all(&data[..(offset as usize).min(data.len())])
                    .map_err(io)?;
            }
            out.sync_all().map_err(io)?;
        } else if moving {
            let name = path.file_name().map(PathBuf::from).unwrap_or_default();
            fs::rename(&path, quarantine.join(name)).map_err(io)?;
        }
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    // The journal now ends in the segment that was cut.
    if let Some((first, _)) = list(dir).map_err(io)?.last() {
        write_manifest(dir, *first).map_err(io)?;
    }
    Ok(Some((file, offset)))
}

/// Appends records to the current segment, starting a new one past `segment_bytes`.
///
/// A write or sync that fails (a full disk) leaves the journal as it was before it: the
/// segment is cut back to its last whole write, a segment that could not be started is
/// removed, and octets written since the last successful sync are kept in memory and written
/// again before the next sync (after a failed fsync the kernel may have dropped them). The
/// caller keeps what it could not write and tries again; sequences never skip.
pub struct SegmentWriter {
    dir: PathBuf,
    file: Option<File>,
    /// The current segment's first sequence.
    first: u64,
    size: u64,
    /// Size of the current segment as last synced.
    synced_size: u64,
    /// Octets written to the current segment since its last successful sync.
    unsynced: Vec<u8>,
    /// A sync failed: the unsynced octets must be written again before syncing.
    rewrite: bool,
    segment_bytes: u64,
    next_sequence: u64,
}

/// The name of the manifest: the first sequence of the segment being written, replaced (and
/// synced) each time a segment starts, so that start-up can tell a missing last segment from
/// a clean end.
pub(crate) const MANIFEST: &str = "manifest";

/// Writes the manifest naming `first` as the current segment (atomically).
fn write_manifest(dir: &Path, first: u64) -> io::Result<()> {
    super::write_atomically(
        &dir.join(MANIFEST),
        format!("OCFJ-MANIFEST 1\ncurrent {first}\n").as_bytes(),
    )
}

/// The first sequence of the segment the manifest says was being written; `None` if there is
/// no manifest (a journal from before it existed).
pub(crate) fn read_manifest(dir: &Path) -> Result<Option<u64>, ReadError> {
    let path = dir.join(MANIFEST);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ReadError::Io { file: path, source }),
    };
    let current = text
        .lines()
        .find_map(|l| l.strip_prefix("current "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    match (text.starts_with("OCFJ-MANIFEST 1\n"), current) {
        (true, Some(first)) => Ok(Some(first)),
        _ => Err(ReadError::Corrupt {
            file: path,
            offset: 0,
            reason: "not a journal manifest".into(),
        }),
    }
}

impl SegmentWriter {
    /// Opens the journal for appending after `last_sequence` (0: empty journal), in the last
    /// segment if there is one.
    pub fn open(dir: &Path, next_sequence: u64, segment_bytes: u64) -> io::Result<SegmentWriter> {
        Self::open_with(dir, next_sequence, segment_bytes, false)
    }

    /// As [`Self::open`]; with `fresh`, a new segment starts at `next_sequence` (after a
    /// snapshot that includes records the journal lost).
    pub(crate) fn open_with(
        dir: &Path,
        next_sequence: u64,
        segment_bytes: u64,
        fresh: bool,
    ) -> io::Result<SegmentWriter> {
        fs::create_dir_all(dir)?;
        let segments = list(dir)?;
        // Records are appended to the last segment only if it is of this version; an older
        // one (an upgrade) is left as it is and a new segment starts.
        let current = |(first, path): &&(u64, PathBuf)| {
            let mut head = [0u8; SEGMENT_HEADER];
            File::open(path)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
                .is_ok_and(|_| header_version(&head, *first) == Some(VERSION))
        };
        let mut w = SegmentWriter {
            dir: dir.into(),
            file: None,
            first: next_sequence,
            size: 0,
            synced_size: 0,
            unsynced: Vec::new(),
            rewrite: false,
            segment_bytes,
            next_sequence,
        };
        match segments.last().filter(|_| !fresh).filter(current) {
            Some((first, path)) => {
                let file = OpenOptions::new().append(true).open(path)?;
                w.size = file.metadata()?.len();
                w.synced_size = w.size;
                w.first = *first;
                w.file = Some(file);
                if read_manifest(dir).ok().flatten() != Some(*first) {
                    write_manifest(dir, *first)?;
                }
            }
            None => w.start_segment()?,
        }
        Ok(w)
    }

    /// Starts a segment at `next_sequence`: header written and synced, the name synced, the
    /// manifest naming it. A half-made segment is removed again.
    fn start_segment(&mut self) -> io::Result<()> {
        let first = self.next_sequence;
        let path = segment_path(&self.dir, first);
        // A segment of this name holding no record is one an earlier attempt left half made.
        if fs::metadata(&path).is_ok_and(|m| m.len() <= SEGMENT_HEADER as u64) {
            fs::remove_file(&path)?;
        }
        let made = (|| {
            let mut file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)?;
            file.write_all(&header(first))?;
            file.sync_all()?;
            // The new name must survive a crash too.
            File::open(&self.dir)?.sync_all()?;
            write_manifest(&self.dir, first)?;
            Ok::<File, io::Error>(file)
        })();
        match made {
            Ok(file) => {
                self.file = Some(file);
                self.first = first;
                self.size = SEGMENT_HEADER as u64;
                self.synced_size = self.size;
                self.unsynced.clear();
                self.rewrite = false;
                Ok(())
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::AlreadyExists {
                    let _ = fs::remove_file(&path);
                }
                Err(e)
            }
        }
    }

    /// Writes encoded records (whose sequences start at `next_sequence`, `count` of them) in
    /// one write, first starting a new segment if this one is full. On failure nothing of it
    /// stays in the file.
    pub fn append(&mut self, encoded: &[u8], count: u64) -> io::Result<()> {
        if self.file.is_none() || self.size >= self.segment_bytes {
            if self.file.is_some() {
                // The full segment is made durable before the next one starts, so only the
                // current segment ever has unsynced octets.
                self.sync()?;
            }
            self.file = None;
            self.start_segment()?;
        }
        if self.rewrite {
            self.rewrite_unsynced()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("no segment open"));
        };
        if let Err(e) = file.write_all(encoded) {
            let _ = file.set_len(self.size);
            return Err(e);
        }
        self.size += encoded.len() as u64;
        self.unsynced.extend_from_slice(encoded);
        self.next_sequence += count;
        Ok(())
    }

    /// Writes again what was written since the last good sync (a sync failed: the kernel may
    /// have dropped those pages).
    fn rewrite_unsynced(&mut self) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.set_len(self.synced_size)?;
        if let Err(e) = file.write_all(&self.unsynced) {
            let _ = file.set_len(self.synced_size);
            return Err(e);
        }
        self.rewrite = false;
        Ok(())
    }

    /// Syncs the current segment. After a failure, the next call writes the unsynced octets
    /// again first.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.rewrite {
            self.rewrite_unsynced()?;
        }
        let Some(file) = self.file.as_ref() else {
            return Ok(());
        };
        match file.sync_data() {
            Ok(()) => {
                self.synced_size = self.size;
                self.unsynced.clear();
                Ok(())
            }
            Err(e) => {
                self.rewrite = true;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// Reads the journal as the writer appends to it, up to a sequence the writer says is written
/// (never a record still being written, nor octets past it that a failed write may leave).
/// The usage files are made this way, from the journal, so they hold exactly what it holds.
pub struct Follower {
    dir: PathBuf,
    /// The segment being read: its first sequence, file, format version and read offset.
    current: Option<(u64, File, u32, u64)>,
    /// The next sequence to hand out.
    next: u64,
    /// Read buffer, kept between reads.
    buf: Vec<u8>,
}

/// Octets read from a segment at a time (more than the largest record).
const FOLLOW_CHUNK: usize = 4 << 20;

impl Follower {
    /// Starts after sequence `after`.
    pub fn new(dir: &Path, after: u64) -> Follower {
        Follower {
            dir: dir.into(),
            current: None,
            next: after + 1,
            buf: Vec::new(),
        }
    }

    /// The next sequence it will read.
    pub(crate) fn next_sequence(&self) -> u64 {
        self.next
    }

    /// Passes every record of kind `kind` from the next sequence up to `upto` (inclusive) to
    /// `f`, in order, and skips the others without decoding them. Stops early where the journal
    /// has no more yet.
    pub(crate) fn read_up_to(
        &mut self,
        upto: u64,
        kinds: &[u8],
        mut f: impl FnMut(&Record),
    ) -> Result<(), ReadError> {
        self.read_while(upto, kinds, |r| {
            f(r);
            true
        })
    }

    /// [`Self::read_up_to`], stopping before the first record `f` refuses (returns false
    /// for): that record is the next one read.
    pub(crate) fn read_while(
        &mut self,
        upto: u64,
        kinds: &[u8],
        mut f: impl FnMut(&Record) -> bool,
    ) -> Result<(), ReadError> {
        if self.buf.len() < FOLLOW_CHUNK {
            self.buf.resize(FOLLOW_CHUNK, 0);
        }
        while self.next <= upto {
            if self.current.is_none() && !self.open_segment()? {
                return Ok(());
            }
            let Some((_, file, version, offset)) = self.current.as_mut() else {
                return Ok(());
            };
            let path = self.dir.clone();
            let io_err = |source| ReadError::Io {
                file: path.clone(),
                source,
            };
            let n = std::os::unix::fs::FileExt::read_at(&*file, &mut self.buf, *offset)
                .map_err(io_err)?;
            let data = &self.buf[..n];
            let mut pos = 0;
            let mut progressed = false;
            while self.next <= upto {
                // Records of other kinds are only stepped over: what the writer wrote up to
                // `upto` is whole, and only the records handed out are checked and decoded.
                let Some((len, sequence, k)) = record::peek(&data[pos..], *version) else {
                    if let Next::Corrupt(why) = record::next(&data[pos..], *version) {
                        return Err(ReadError::Corrupt {
                            file: self.dir.clone(),
                            offset: *offset + pos as u64,
                            reason: why.into(),
                        });
                    }
                    break;
                };
                if sequence > upto {
                    break;
                }
                if sequence >= self.next && kinds.contains(&k) {
                    match record::next(&data[pos..], *version) {
                        Next::Record(r, _) => {
                            if !f(&r) {
                                *offset += pos as u64;
                                return Ok(());
                            }
                        }
                        Next::Incomplete => break,
                        Next::Corrupt(why) => {
                            return Err(ReadError::Corrupt {
                                file: self.dir.clone(),
                                offset: *offset + pos as u64,
                                reason: why.into(),
                            });
                        }
                    }
                }
                self.next = self.next.max(sequence + 1);
                pos += len;
                progressed = true;
            }
            *offset += pos as u64;
            if self.next > upto {
                return Ok(());
            }
            if !progressed && n < FOLLOW_CHUNK {
                // This segment has nothing more: the rest is in the next one, if it exists.
                let next_first = list(&self.dir)
                    .map_err(|source| ReadError::Io {
                        file: self.dir.clone(),
                        source,
                    })?
                    .into_iter()
                    .map(|(first, _)| first)
                    .find(|&first| first == self.next);
                if next_first.is_none() {
                    return Ok(());
                }
                self.current = None;
            }
        }
        Ok(())
    }

    /// Opens the segment holding the next sequence; false if there is none yet.
    fn open_segment(&mut self) -> Result<bool, ReadError> {
        let io = |file: &Path, source| ReadError::Io {
            file: file.into(),
            source,
        };
        let segments = list(&self.dir).map_err(|e| io(&self.dir, e))?;
        let oldest = segments.first().map(|(f, _)| *f);
        let found = segments.into_iter().rev().find(|(f, _)| *f <= self.next);
        let Some((first, path)) = found else {
            return match oldest {
                // The records before the oldest segment were removed, which happens only once
                // a snapshot covers them and what followed them was synced (so a usage file
                // that ends earlier had nothing more to take from them): go on from there.
                Some(oldest) if oldest > self.next => {
                    tracing::info!(
                        from = self.next,
                        to = oldest,
                        "journal follower: records removed after a snapshot are skipped"
                    );
                    self.next = oldest;
                    self.open_segment()
                }
                _ => Ok(false),
            };
        };
        let mut file = File::open(&path).map_err(|e| io(&path, e))?;
        let mut head = [0u8; SEGMENT_HEADER];
        if std::io::Read::read_exact(&mut file, &mut head).is_err() {
            // Created, header not yet written.
            return Ok(false);
        }
        let version = header_version(&head, first).ok_or_else(|| ReadError::Corrupt {
            file: path.clone(),
            offset: 0,
            reason: "segment header does not match its name".into(),
        })?;
        self.current = Some((first, file, version, SEGMENT_HEADER as u64));
        Ok(true)
    }
}
