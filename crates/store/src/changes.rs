//! The change log: every change to the account tree (a provisioning import, a change through
//! the admin API), in order, each synced before it takes effect. It is never cut: replaying it
//! from the start rebuilds the tree with every node at the index the ledger journal names.
//! Changes are rare (an operator's action), so one file, appended and synced per change.
//!
//! Format version 1, FROZEN like the journal's records:
//!
//! ```text
//! file   = "OCFC" version:u32le record*
//! record = length:u32le crc:u32le body          (crc: CRC-32 of body, as crc32fast)
//! body   = after_sequence:u64le time:i64le change
//! ```
//!
//! `after_sequence` is the last ledger journal sequence queued before the change took effect:
//! on replay, the change is applied after that record and before the next. `change` is the
//! change as a JSON object of schema 1 (`change_record`), the store's own types.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Buf;

const MAGIC: &[u8; 4] = b"OCFC";
const VERSION: u32 = 1;
/// Largest change body: a provisioning import carries whole files.
pub(crate) const MAX_CHANGE: usize = 64 << 20;

/// One logged change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeRecord {
    pub after_sequence: u64,
    pub time: i64,
    pub change: Vec<u8>,
}

impl ChangeRecord {
    /// The record as the file holds it: length, CRC, body.
    pub fn frame(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(16 + self.change.len());
        body.extend_from_slice(&self.after_sequence.to_le_bytes());
        body.extend_from_slice(&self.time.to_le_bytes());
        body.extend_from_slice(&self.change);
        let mut frame = Vec::with_capacity(8 + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        frame.extend_from_slice(&body);
        frame
    }
}

/// The open change log, positioned for appending.
pub struct ChangeLog {
    file: File,
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", file.display())]
pub struct ChangeLogError {
    pub file: PathBuf,
    pub reason: String,
}

impl ChangeLog {
    /// Opens (or creates) the log and reads every change in it. A torn last record (a crash
    /// while appending: its change never took effect) is cut off; damage before the end is an
    /// error, as the tree could not be rebuilt.
    pub fn open(path: &Path) -> Result<(ChangeLog, Vec<ChangeRecord>), ChangeLogError> {
        let err = |reason: String| ChangeLogError {
            file: path.to_owned(),
            reason,
        };
        let io = |e: io::Error| err(e.to_string());
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io)?;
        if data.is_empty() {
            let mut head = MAGIC.to_vec();
            head.extend_from_slice(&VERSION.to_le_bytes());
            file.write_all(&head).map_err(io)?;
            file.sync_all().map_err(io)?;
            if let Some(dir) = path.parent() {
                File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
            }
            return Ok((
                ChangeLog {
                    file,
                    path: path.to_owned(),
                },
                Vec::new(),
            ));
        }
        if data.len() < 8 || &data[..4] != MAGIC {
            return Err(err("not a change log".into()));
        }
        if data[4..8] != VERSION.to_le_bytes() {
            return Err(err("unknown change log version".into()));
        }
        let (records, good) = parse_records(&data[8..]);
        let good = 8 + good;
        if good < data.len() {
            // Only a torn tail may be cut: the last record, cut short or not fully written
            // when the machine stopped (it was never synced, so it never took effect).
            let rest = &data[good..];
            let claimed = rest
                .get(..4)
                .map(|l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize);
            let torn = claimed.is_none_or(|len| len > MAX_CHANGE || 8 + len >= rest.len());
            if !torn {
                return Err(err(format!("damaged record at offset {good}")));
            }
            file.set_len(good as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
            tracing::warn!(file = %path.display(), offset = good, "change log: torn last record cut off");
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok((
            ChangeLog {
                file,
                path: path.to_owned(),
            },
            records,
        ))
    }

    /// Appends a change and syncs it: once this returns, the change survives a crash.
    pub fn append(&mut self, record: &ChangeRecord) -> io::Result<()> {
        if record.change.len() + 16 > MAX_CHANGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "change too large for the change log",
            ));
        }
        let frame = record.frame();
        let at = self.file.stream_position()?;
        if let Err(e) = self
            .file
            .write_all(&frame)
            .and_then(|_| self.file.sync_data())
        {
            // Leave no partial record behind for the next append to follow.
            let _ = self.file.set_len(at);
            let _ = self.file.seek(SeekFrom::Start(at));
            return Err(e);
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads whole, valid records; returns them and the octets they span.
/// The whole records at the start of `data` (a change log after its 8-octet header), and the
/// octets they take: reading stops at the first record that is cut short or damaged.
pub fn parse_records(mut data: &[u8]) -> (Vec<ChangeRecord>, usize) {
    let mut out = Vec::new();
    let mut used = 0;
    loop {
        let mut r = data;
        let (Ok(len), Ok(crc)) = (r.try_get_u32_le(), r.try_get_u32_le()) else {
            break;
        };
        let len = len as usize;
        if !(16..=MAX_CHANGE).contains(&len) || data.len() < 8 + len {
            break;
        }
        let body = &data[8..8 + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        let mut b = body;
        let (Ok(after_sequence), Ok(time)) = (b.try_get_u64_le(), b.try_get_i64_le()) else {
            break;
        };
        out.push(ChangeRecord {
            after_sequence,
            time,
            change: body[16..].to_vec(),
        });
        data = &data[8 + len..];
        used += 8 + len;
    }
    (out, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u64) -> ChangeRecord {
        ChangeRecord {
            after_sequence: n,
            time: 1_700_000_000 + n as i64,
            change: format!("{{\"n\":{n}}}").into_bytes(),
        }
    }

    #[test]
    fn changes_survive_reopening_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("changes");
        let (mut log, none) = ChangeLog::open(&path).unwrap();
        assert!(none.is_empty());
        for n in 0..3 {
            log.append(&rec(n)).unwrap();
        }
        drop(log);
        let (mut log, back) = ChangeLog::open(&path).unwrap();
        assert_eq!(back, vec![rec(0), rec(1), rec(2)]);
        log.append(&rec(3)).unwrap();
        let (_, back) = ChangeLog::open(&path).unwrap();
        assert_eq!(back.len(), 4);
        assert_eq!(back[3], rec(3));
    }

    #[test]
    fn a_torn_tail_is_cut_and_damage_before_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("changes");
        let (mut log, _) = ChangeLog::open(&path).unwrap();
        log.append(&rec(1)).unwrap();
        log.append(&rec(2)).unwrap();
        drop(log);
        let full = std::fs::read(&path).unwrap();
        // Every cut inside the last record leaves the first.
        let second = full.len() - (8 + 16 + rec(2).change.len());
        for cut in second + 1..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let (_, back) = ChangeLog::open(&path).unwrap();
            assert_eq!(back, vec![rec(1)], "cut at {cut}");
            assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, second);
        }
        // A flipped bit inside the first record (with a whole record after it) is damage.
        let mut bad = full.clone();
        bad[8 + 8 + 3] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let e = ChangeLog::open(&path).err().expect("damage is refused");
        assert!(e.reason.contains("damaged"), "{e}");
        std::fs::write(&path, b"JUNKJUNK").unwrap();
        assert!(ChangeLog::open(&path).is_err());
    }
}
