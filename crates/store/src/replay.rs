//! Replay at start: the journal's records after a snapshot, applied to a ledger provisioned as
//! it was when they were written (the core's [`Replayer`] knows what each op does).

use std::path::Path;

use ocf_charging::engine::Engine;
use ocf_charging::engine::recorder::{Outstanding, Recovered, Replayer};

use crate::segment::{self, ReadError, ReadSummary};

/// Applies the journal in `dir` (records after `after`) to `engine` (its ledger and, straight
/// into its session maps, the sessions), starting from the reservations a snapshot held open
/// (`open_before`; its sessions already restored); `before(sequence)` runs ahead of each record
/// (account changes logged before it take effect first). Truncates a torn tail; stops at
/// corruption, and refuses a record the core cannot apply.
pub fn replay(
    engine: &Engine,
    dir: &Path,
    after: u64,
    open_before: Vec<Outstanding>,
    mut before: impl FnMut(u64),
) -> Result<(Recovered, ReadSummary), ReadError> {
    let mut replayer = Replayer::new(engine, open_before);
    let mut refused: Option<(u64, String)> = None;
    let summary = segment::read_all(dir, after, true, |r| {
        before(r.sequence);
        if let Err(e) = replayer.apply(&r.op, r.time) {
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
