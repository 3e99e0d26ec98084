//! Usage records for audit and reconciliation: one JSON line per session end (and per interim
//! report if configured), written by their own thread to `state_dir/usage/usage-<n>.jsonl`,
//! a new file once the current one passes its size limit.
//!
//! With a journal, the records are journal records (kind 7) first: written, and made durable,
//! with the ledger changes they account for. This thread follows the journal and copies them
//! to the usage files, each line starting with the journal sequence it came from
//! (`{"seq":N,...}`), so after any stop it resumes after the last line written and nothing
//! that reached the ledger is missing from the files. Without a journal, the engine hands the
//! lines over directly.
//!
//! A line is written whole or not at all: a write that fails (a full disk) is cut off again and
//! retried until it succeeds; nothing is dropped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};

use super::record::Op;
use super::segment::Follower;

/// Handle to the usage-record writer.
pub struct UsageLog {
    tx: Mutex<Option<Sender<String>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Following the journal: the journal sequence up to which the usage files are synced
    /// (journal segments up to it may go), and how to wake and stop the follower.
    follow: Option<Arc<FollowState>>,
}

/// Shared with a follower thread.
pub struct FollowState {
    /// Usage records of journal records up to this sequence are synced to the usage files.
    pub synced: AtomicU64,
    /// Failed writes of the usage files (retried; ops must alert).
    pub errors: AtomicU64,
    /// Lines written since start.
    pub lines: AtomicU64,
    stop: AtomicBool,
    wake: std::sync::Arc<crate::mailbox::Signal>,
}

/// What a writer copies out of the journal (or is handed) into files of its own: usage
/// records, or events.
#[derive(Clone, Copy)]
pub struct Stream {
    /// Files are `<prefix>-<n>.jsonl`.
    pub prefix: &'static str,
    /// The kinds of journal records it copies.
    pub(crate) kinds: &'static [u8],
    /// Appends the line of one record, `{"seq":N,...}` and a newline.
    pub(crate) render: fn(&super::record::Record, &mut Vec<u8>),
    /// Its name in log messages.
    pub(crate) what: &'static str,
}

/// Usage records: journal kind 7, each a JSON object the core wrote.
pub const USAGE: Stream = Stream {
    prefix: "usage",
    kinds: &[super::record::KIND_USAGE],
    render: render_usage,
    what: "usage records",
};

fn render_usage(r: &super::record::Record, out: &mut Vec<u8>) {
    if let Op::Usage(line) = &r.op {
        let _ = write!(out, "{{\"seq\":{},", r.sequence);
        out.extend_from_slice(line.strip_prefix(b"{").unwrap_or(line));
        out.push(b'\n');
    }
}

/// Lines that may wait for the writer; a full queue makes the caller wait rather than drop an
/// audit record.
const QUEUE: usize = 65536;

/// The files of `prefix` in `dir` (`<prefix>-<n>.jsonl`) with their numbers, oldest first.
fn numbered(dir: &Path, prefix: &str) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut v: Vec<(u64, PathBuf)> = Vec::new();
    for e in fs::read_dir(dir)? {
        let path = e?.path();
        let n = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|n| n.strip_prefix('-'))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = n {
            v.push((n, path));
        }
    }
    v.sort();
    Ok(v)
}

/// The number of the newest file of `prefix` in `dir` (0: none).
fn last_index(dir: &Path, prefix: &str) -> io::Result<u64> {
    Ok(numbered(dir, prefix)?.last().map_or(0, |(n, _)| *n))
}

/// The usage files in `dir`, oldest first.
pub fn files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    stream_files(dir, USAGE.prefix)
}

/// The newest usage records of `subscriber` (as records name it, `e164:...`), newest first:
/// at most `max` of them, from at most the last `max_bytes` octets of the usage files (explain's
/// history; a torn or foreign line is skipped). No directory: none.
pub fn recent_of(
    dir: &Path,
    subscriber: &str,
    max: usize,
    max_bytes: u64,
) -> io::Result<Vec<serde_json::Value>> {
    use std::io::{Read, Seek, SeekFrom};
    let files = match files(dir) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let needle = match serde_json::to_string(subscriber) {
        Ok(quoted) => format!("\"subscriber\":{quoted}"),
        Err(_) => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    let mut budget = max_bytes;
    for path in files.iter().rev() {
        if budget == 0 || out.len() >= max {
            break;
        }
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        let take = len.min(budget);
        budget -= take;
        f.seek(SeekFrom::Start(len - take))?;
        let mut text = Vec::with_capacity(take as usize);
        f.take(take).read_to_end(&mut text)?;
        // A cut first line is not a record.
        let whole = if take < len {
            text.iter()
                .position(|&b| b == b'\n')
                .map_or(&text[..0], |i| &text[i + 1..])
        } else {
            &text[..]
        };
        for line in whole.split(|&b| b == b'\n').rev() {
            if out.len() >= max {
                break;
            }
            let Ok(line) = std::str::from_utf8(line) else {
                continue;
            };
            if !line.contains(&needle) {
                continue;
            }
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                if v["subscriber"] == subscriber {
                    out.push(v);
                }
            }
        }
    }
    Ok(out)
}

/// The files of a stream (`prefix`) in `dir`, oldest first.
pub fn stream_files(dir: &Path, prefix: &str) -> io::Result<Vec<PathBuf>> {
    Ok(numbered(dir, prefix)?.into_iter().map(|(_, p)| p).collect())
}

impl UsageLog {
    /// Usage records handed over directly (no journal).
    pub fn start(dir: &Path, rotate_bytes: u64) -> io::Result<UsageLog> {
        Self::start_stream(dir, USAGE, rotate_bytes)
    }

    /// Lines of `stream` handed over directly (no journal).
    pub fn start_stream(dir: &Path, stream: Stream, rotate_bytes: u64) -> io::Result<UsageLog> {
        fs::create_dir_all(dir)?;
        let index = last_index(dir, stream.prefix)? + 1;
        let (tx, rx) = bounded(QUEUE);
        let dir = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name(format!("ocfd-{}", stream.prefix))
            .spawn(move || run(rx, dir, stream, index, rotate_bytes))?;
        Ok(UsageLog {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            follow: None,
        })
    }

    /// Follows the journal in `journal`: usage records up to `written()` go to the usage files
    /// in `dir`. Resumes after the last line the files hold (a torn last line is cut off and
    /// written again). `wake` is the signal the journal's writer gives whenever it has
    /// written more (it never blocks).
    pub(crate) fn follow(
        dir: &Path,
        stream: Stream,
        journal: &Path,
        rotate_bytes: u64,
        written: impl Fn() -> u64 + Send + 'static,
        wake: std::sync::Arc<crate::mailbox::Signal>,
    ) -> io::Result<UsageLog> {
        fs::create_dir_all(dir)?;
        let after = resume_point(dir, stream.prefix)?;
        let state = Arc::new(FollowState {
            synced: AtomicU64::new(after),
            errors: AtomicU64::new(0),
            lines: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            wake,
        });
        let (dir, journal, st) = (dir.to_path_buf(), journal.to_path_buf(), state.clone());
        let thread = std::thread::Builder::new()
            .name(format!("ocfd-{}", stream.prefix))
            .spawn(move || follow_run(&dir, stream, &journal, rotate_bytes, after, written, &st))?;
        Ok(UsageLog {
            tx: Mutex::new(None),
            thread: Mutex::new(Some(thread)),
            follow: Some(state),
        })
    }

    /// A follower's progress, if this log follows a journal.
    pub fn following(&self) -> Option<&FollowState> {
        self.follow.as_deref()
    }

    /// Journal sequences whose usage records are all synced to the usage files (`u64::MAX`
    /// without a journal): journal segments must be kept past it.
    pub fn synced_sequence(&self) -> u64 {
        self.follow
            .as_ref()
            .map_or(u64::MAX, |f| f.synced.load(Ordering::Acquire))
    }

    /// Queues records: one or more JSON objects, each ending in a newline (the engine hands
    /// over the records of a whole read batch at once).
    pub fn write(&self, line: String) {
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = guard.as_ref() {
            if tx.send(line).is_err() {
                tracing::error!("usage record writer has stopped; record lost");
            }
        }
    }

    /// Writes and syncs everything queued (following: everything the journal has written),
    /// then stops the thread.
    pub fn close(&self) {
        if let Some(f) = &self.follow {
            f.stop.store(true, Ordering::Release);
            f.wake.notify();
        }
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for UsageLog {
    fn drop(&mut self) {
        self.close();
    }
}

fn open(dir: &Path, prefix: &str, index: u64) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{prefix}-{index:08}.jsonl")))
}

/// The current usage file: written whole lines at a time, a new one past the size limit.
struct Files {
    dir: PathBuf,
    prefix: &'static str,
    index: u64,
    file: Option<File>,
    size: u64,
    rotate_bytes: u64,
    last_sync: Instant,
    unsynced: bool,
}

impl Files {
    fn new(dir: &Path, prefix: &'static str, index: u64, rotate_bytes: u64) -> Files {
        Files {
            dir: dir.into(),
            prefix,
            index,
            file: None,
            size: 0,
            rotate_bytes,
            last_sync: Instant::now(),
            unsynced: false,
        }
    }

    /// Writes `lines` (whole lines), taking from the front of it what was written: a file
    /// takes lines until it passes its size limit, then a new one starts. On failure the file
    /// is cut back to where it was, so a line is never left half written, and what was not
    /// written stays in `lines` for the caller to retry.
    fn append(&mut self, lines: &mut Vec<u8>) -> io::Result<()> {
        while !lines.is_empty() {
            if self.file.is_some() && self.size >= self.rotate_bytes {
                self.sync()?;
                self.file = None;
                self.index += 1;
            }
            if self.file.is_none() {
                let f = open(&self.dir, self.prefix, self.index)?;
                self.size = f.metadata()?.len();
                self.file = Some(f);
            }
            // Whole lines up to the limit (at least one).
            let room = self.rotate_bytes.saturating_sub(self.size) as usize;
            let mut cut = 0;
            for (i, _) in lines.iter().enumerate().filter(|(_, b)| **b == b'\n') {
                if cut > 0 && i + 1 > room {
                    break;
                }
                cut = i + 1;
            }
            if cut == 0 {
                cut = lines.len();
            }
            let Some(file) = self.file.as_mut() else {
                return Ok(());
            };
            if let Err(e) = file.write_all(&lines[..cut]) {
                // Cut off whatever part of it reached the file.
                let _ = file.set_len(self.size);
                return Err(e);
            }
            self.size += cut as u64;
            self.unsynced = true;
            lines.drain(..cut);
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        if let (Some(f), true) = (&self.file, self.unsynced) {
            f.sync_data()?;
        }
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }
}

fn run(rx: Receiver<String>, dir: PathBuf, stream: Stream, index: u64, rotate_bytes: u64) {
    let what = stream.what;
    let mut files = Files::new(&dir, stream.prefix, index, rotate_bytes);
    let mut buf: Vec<u8> = Vec::new();
    let mut failures = 0usize;
    let mut open = true;
    while open || !buf.is_empty() {
        if buf.is_empty() || failures > 0 {
            let wait = if failures > 0 {
                super::retry_wait(failures)
            } else {
                Duration::from_secs(1)
            };
            match rx.recv_timeout(wait) {
                Ok(l) => buf.extend_from_slice(l.as_bytes()),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
        }
        for line in rx.try_iter().take(4096) {
            buf.extend_from_slice(line.as_bytes());
        }
        match files.append(&mut buf) {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::error!(error = %e, what, "write failed; retrying");
                }
                if !open && failures > 100 {
                    tracing::error!(error = %e, what, octets = buf.len(), "not written at stop");
                    return;
                }
                continue;
            }
        }
        if files.last_sync.elapsed() >= Duration::from_secs(1) || !open {
            let _ = files.sync();
        }
    }
}

/// Where following resumes: the `seq` of the last whole line of the newest usage file that has
/// one (a torn last line is cut off first); 0 if none has.
fn resume_point(dir: &Path, prefix: &str) -> io::Result<u64> {
    for path in stream_files(dir, prefix)?.iter().rev() {
        let data = fs::read(path)?;
        let whole = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < data.len() {
            let f = OpenOptions::new().write(true).open(path)?;
            f.set_len(whole as u64)?;
            f.sync_all()?;
        }
        let last = data[..whole]
            .split(|&b| b == b'\n')
            .rev()
            .find(|l| !l.is_empty());
        if let Some(seq) = last.and_then(line_sequence) {
            return Ok(seq);
        }
        if last.is_some() {
            // Lines from before usage records came from the journal: the journal holds no
            // usage records for them.
            return Ok(0);
        }
    }
    Ok(0)
}

/// The journal sequence a line starts with (`{"seq":N,`).
pub(crate) fn line_sequence(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

fn follow_run(
    dir: &Path,
    stream: Stream,
    journal: &Path,
    rotate_bytes: u64,
    after: u64,
    written: impl Fn() -> u64,
    st: &FollowState,
) {
    // Lines go on in the newest file.
    let what = stream.what;
    let index = last_index(dir, stream.prefix).unwrap_or(0).max(1);
    let mut files = Files::new(dir, stream.prefix, index, rotate_bytes);
    let mut follower = Follower::new(journal, after);
    let mut pending: Vec<u8> = Vec::new();
    // The last journal sequence whose usage records are in `pending` or the files.
    let mut read_to = after;
    let mut failures = 0usize;
    loop {
        let stopping = st.stop.load(Ordering::Acquire);
        let upto = written();
        let read_before = read_to;
        if pending.is_empty() && read_to < upto {
            let mut lines = 0;
            let result = follower.read_up_to(upto, stream.kinds, |r| {
                (stream.render)(r, &mut pending);
                lines += 1;
            });
            st.lines.fetch_add(lines, Ordering::Relaxed);
            if let Err(e) = result {
                st.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, what, "the journal cannot be read");
            }
            read_to = follower.next_sequence() - 1;
        }
        match files.append(&mut pending) {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(what, "written again");
                }
                failures = 0;
            }
            Err(e) => {
                st.errors.fetch_add(1, Ordering::Relaxed);
                failures += 1;
                if failures == 1 {
                    tracing::error!(error = %e, what, "write failed; retrying");
                }
            }
        }
        let due = files.last_sync.elapsed() >= Duration::from_secs(1) || stopping;
        if pending.is_empty() && due {
            match files.sync() {
                Ok(()) => st.synced.store(read_to, Ordering::Release),
                Err(e) => {
                    st.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, what, "sync failed; retrying");
                }
            }
        }
        if stopping && pending.is_empty() && read_to >= written() {
            let _ = files.sync();
            st.synced.store(read_to, Ordering::Release);
            return;
        }
        if stopping && failures > 100 {
            tracing::error!(what, "not all written at stop; they are in the journal");
            return;
        }
        let wait = if failures > 0 {
            super::retry_wait(failures)
        } else if read_to < written() {
            if read_to > read_before {
                Duration::ZERO
            } else {
                // Behind, but nothing could be read (the journal is not there yet): wait
                // rather than spin.
                Duration::from_millis(100)
            }
        } else {
            Duration::from_secs(1)
        };
        if !wait.is_zero() {
            st.wake.wait(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_written_in_order_and_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let log = UsageLog::start(dir.path(), 1000).unwrap();
        for n in 0..500 {
            log.write(format!("{{\"n\":{n}}}\n"));
        }
        log.close();
        let files = files(dir.path()).unwrap();
        assert!(files.len() > 1, "rotated");
        let mut all = Vec::new();
        for f in &files {
            all.extend(fs::read_to_string(f).unwrap().lines().map(str::to_owned));
        }
        assert_eq!(
            all,
            (0..500)
                .map(|n| format!("{{\"n\":{n}}}"))
                .collect::<Vec<_>>()
        );
        // A restart continues in a new file after the last one.
        let log = UsageLog::start(dir.path(), 1000).unwrap();
        log.write("{}\n".into());
        log.close();
        let again = super::files(dir.path()).unwrap();
        assert_eq!(again.len(), files.len() + 1);
    }
}
