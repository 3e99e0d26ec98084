//! Replay at start: the journal's records after a snapshot, applied to a ledger provisioned as
//! it was when they were written (the core's [`Replayer`] knows what each op does).

use std::path::Path;

use ocf_charging::engine::recorder::{Outstanding, Recovered, Replayer};
use ocf_charging::engine::session::Restored;
use ocf_charging::ledger::Ledger;

use crate::segment::{self, ReadError, ReadSummary};

/// Applies the journal in `dir` (records after `after`) to `ledger`, starting from what a
/// snapshot held (`open_before`, `sessions_before`); `before(sequence)` runs ahead of each
/// record (account changes logged before it take effect first). Truncates a torn tail; stops
/// at corruption, and refuses a record the core cannot apply.
pub fn replay(
    ledger: &Ledger,
    dir: &Path,
    after: u64,
    open_before: Vec<Outstanding>,
    sessions_before: Vec<Restored>,
    mut before: impl FnMut(u64),
) -> Result<(Recovered, ReadSummary), ReadError> {
    let mut replayer = Replayer::new(open_before, sessions_before);
    let mut refused: Option<(u64, String)> = None;
    let summary = segment::read_all(dir, after, true, |r| {
        before(r.sequence);
        if let Err(e) = replayer.apply(ledger, &r.op, r.time) {
            refused.get_or_insert((r.sequence, e.to_string()));
        }
    })?;
    if let Some((sequence, reason)) = refused {
        return Err(ReadError::Corrupt {
            file: dir.into(),
            offset: sequence,
            reason: format!("record {sequence}: {reason}"),
        });
    }
    Ok((replayer.finish(), summary))
}
