//! Persistence beside the hot path (DESIGN.md §6): what the charging core hands over is written
//! here. A journal of ledger mutations in append-only, checksummed segment files (a writer
//! thread with group commit), the change log of the account tree, snapshots, replay and
//! recovery at start, and usage records that follow the journal. Every file format here is
//! frozen: versioned, documented in its module, and held byte for byte by a test.
//!
//! [`Store`] is the charging core with its persistence: requests are admitted, answered by the
//! core and their ops handed to the journal; account changes are logged before they are carried
//! out; snapshots are taken with requests stopped.

pub mod change_record;
pub mod changes;
pub mod events;
mod mailbox;
pub mod record;
pub mod recovery;
pub mod replay;
pub mod replication;
pub mod segment;
pub mod snapshot;
pub mod statement;
mod store;
pub mod usage;
pub mod writer;

pub use recovery::{JournalSettings, StoreConfig, StoreError, UsageSettings};
pub use store::{Replication, Store, Taken};

// The core bounds what one op may carry by what one record holds.
const _: () = assert!(ocf_charging::ops::MAX_DATA + record::BODY_HEADER == record::MAX_BODY_V2);

/// How long a failed write or sync of the journal or the usage files waits before it is tried
/// again, by consecutive failures: 50 ms, doubling to a second.
pub(crate) fn retry_wait(failures: usize) -> std::time::Duration {
    const WAIT_MS: [u64; 6] = [50, 100, 200, 400, 800, 1000];
    std::time::Duration::from_millis(WAIT_MS[failures.saturating_sub(1).min(WAIT_MS.len() - 1)])
}

/// Writes `data` to `path` so that a crash leaves the old file or the new one, never a mix:
/// a temporary file, synced, renamed over the old one, and the directory synced.
pub(crate) fn write_atomically(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
