//! Persistence beside the hot path (DESIGN.md §6): a journal of ledger mutations in
//! append-only, checksummed segment files.

pub mod changes;
pub mod le;
pub mod record;
pub mod segment;
pub mod usage;
pub mod writer;
