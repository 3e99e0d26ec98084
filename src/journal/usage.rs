//! Usage records for audit and reconciliation: one JSON line per session end (and per interim
//! report if configured), written by their own thread to `state_dir/usage/usage-<n>.jsonl`,
//! a new file once the current one passes its size limit.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};

/// Handle to the usage-record writer.
pub struct UsageLog {
    tx: Mutex<Option<Sender<String>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Lines that may wait for the writer; a full queue makes the caller wait rather than drop an
/// audit record.
const QUEUE: usize = 65536;

fn next_index(dir: &Path) -> io::Result<u64> {
    let mut max = 0;
    for e in fs::read_dir(dir)? {
        let name = e?.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix("usage-"))
            .and_then(|n| n.strip_suffix(".jsonl"))
        else {
            continue;
        };
        if let Ok(n) = n.parse::<u64>() {
            max = max.max(n);
        }
    }
    Ok(max + 1)
}

/// The usage files in `dir`, oldest first.
pub fn files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut v: Vec<(u64, PathBuf)> = Vec::new();
    for e in fs::read_dir(dir)? {
        let path = e?.path();
        let n = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("usage-"))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = n {
            v.push((n, path));
        }
    }
    v.sort();
    Ok(v.into_iter().map(|(_, p)| p).collect())
}

impl UsageLog {
    pub fn start(dir: &Path, rotate_bytes: u64) -> io::Result<UsageLog> {
        fs::create_dir_all(dir)?;
        let index = next_index(dir)?;
        let (tx, rx) = bounded(QUEUE);
        let dir = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("ocfd-usage".into())
            .spawn(move || run(rx, dir, index, rotate_bytes))?;
        Ok(UsageLog {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
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

    /// Writes and syncs everything queued, then stops the thread.
    pub fn close(&self) {
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

fn open(dir: &Path, index: u64) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("usage-{index:08}.jsonl")))
}

fn run(rx: Receiver<String>, dir: PathBuf, mut index: u64, rotate_bytes: u64) {
    let mut file = match open(&dir, index) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, dir = %dir.display(), "cannot open usage records");
            return;
        }
    };
    let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut buf = String::new();
    let mut last_sync = Instant::now();
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) => Some(l),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                let _ = file.sync_data();
                return;
            }
        };
        buf.clear();
        for line in first.into_iter().chain(rx.try_iter().take(4096)) {
            if size + buf.len() as u64 >= rotate_bytes {
                // This file is full: what is buffered goes to it, the rest to a new one.
                write(&mut file, &mut buf, &mut size);
                let _ = file.sync_data();
                index += 1;
                match open(&dir, index) {
                    Ok(f) => {
                        file = f;
                        size = 0;
                    }
                    Err(e) => tracing::error!(error = %e, "cannot start a new usage file"),
                }
            }
            buf.push_str(&line);
        }
        write(&mut file, &mut buf, &mut size);
        if last_sync.elapsed() >= Duration::from_secs(1) {
            let _ = file.sync_data();
            last_sync = Instant::now();
        }
    }
}

fn write(file: &mut File, buf: &mut String, size: &mut u64) {
    if buf.is_empty() {
        return;
    }
    if let Err(e) = file.write_all(buf.as_bytes()) {
        tracing::error!(error = %e, "usage record write failed");
    }
    *size += buf.len() as u64;
    buf.clear();
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
