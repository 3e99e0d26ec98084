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

pub const MAGIC: &[u8; 4] = b"OCFJ";
/// The version new segments are written in (older segments are read in theirs).
pub const VERSION: u32 = record::VERSION;
pub const SEGMENT_HEADER: usize = 16;

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
    let mut summary = ReadSummary::default();
    let mut expected: Option<u64> = None;
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
pub fn cut_at_corruption(dir: &Path, now: i64) -> Result<Option<(PathBuf, u64)>, ReadError> {
    let (file, offset) = match read_all(dir, 0, true, |_| {}) {
        Ok(_) => return Ok(None),
        Err(ReadError::Corrupt { file, offset, .. }) => (file, offset),
        Err(e) => return Err(e),
    };
    let io = |source| ReadError::Io {
        file: file.clone(),
        source,
    };
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
    Ok(Some((file, offset)))
}

/// Appends records to the current segment, starting a new one past `segment_bytes`.
pub struct SegmentWriter {
    dir: PathBuf,
    file: File,
    size: u64,
    segment_bytes: u64,
    next_sequence: u64,
}

impl SegmentWriter {
    /// Opens the journal for appending after `last_sequence` (0: empty journal), in the last
    /// segment if there is one.
    pub fn open(dir: &Path, next_sequence: u64, segment_bytes: u64) -> io::Result<SegmentWriter> {
        Self::open_with(dir, next_sequence, segment_bytes, false)
    }

    /// As [`Self::open`]; with `fresh`, a new segment starts at `next_sequence` (after a
    /// snapshot that includes records the journal lost).
    pub fn open_with(
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
        let (file, size) = match segments.last().filter(|_| !fresh).filter(current) {
            Some((_, path)) => {
                let file = OpenOptions::new().append(true).open(path)?;
                let size = file.metadata()?.len();
                (file, size)
            }
            None => Self::create(dir, next_sequence)?,
        };
        Ok(SegmentWriter {
            dir: dir.into(),
            file,
            size,
            segment_bytes,
            next_sequence,
        })
    }

    fn create(dir: &Path, first: u64) -> io::Result<(File, u64)> {
        let path = segment_path(dir, first);
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        file.write_all(&header(first))?;
        file.sync_all()?;
        // The new name must survive a crash too.
        File::open(dir)?.sync_all()?;
        Ok((file, SEGMENT_HEADER as u64))
    }

    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Writes encoded records (whose sequences start at `next_sequence`, `count` of them) in
    /// one write, first starting a new segment if this one is full.
    pub fn append(&mut self, encoded: &[u8], count: u64) -> io::Result<()> {
        if self.size >= self.segment_bytes {
            self.file.sync_data()?;
            let (file, size) = Self::create(&self.dir, self.next_sequence)?;
            self.file = file;
            self.size = size;
        }
        self.file.write_all(encoded)?;
        self.size += encoded.len() as u64;
        self.next_sequence += count;
        Ok(())
    }

    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
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
        }
    }

    /// The next sequence it will read.
    pub fn next_sequence(&self) -> u64 {
        self.next
    }

    /// Passes every record from the next sequence up to `upto` (inclusive) to `f`, in order.
    /// Stops early where the journal has no more yet.
    pub fn read_up_to(&mut self, upto: u64, mut f: impl FnMut(&Record)) -> Result<(), ReadError> {
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
            let mut buf = vec![0u8; FOLLOW_CHUNK];
            let n =
                std::os::unix::fs::FileExt::read_at(&*file, &mut buf, *offset).map_err(io_err)?;
            buf.truncate(n);
            let mut pos = 0;
            let mut progressed = false;
            while self.next <= upto {
                match record::next(&buf[pos..], *version) {
                    Next::Record(r, len) => {
                        if r.sequence > upto {
                            break;
                        }
                        if r.sequence >= self.next {
                            f(&r);
                            self.next = r.sequence + 1;
                        }
                        pos += len;
                        progressed = true;
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
        let Some((first, path)) = segments.into_iter().rev().find(|(f, _)| *f <= self.next) else {
            return Ok(false);
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
