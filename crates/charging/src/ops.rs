//! What the core hands the store to persist: one [`Op`] per ledger mutation, plus the session
//! states and usage records kept with them. The store frames and encodes them (the journal's
//! frozen format is `ocf_store::record`); the core never writes them itself.

/// An account as the journal names it: tree and node indices. (Kept apart from the ledger's own
/// types, which are free to change; the recorder converts.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Account {
    pub tree: u32,
    pub node: u32,
}

/// Unit codes: 0 octets, 1 seconds, 2 events, 3 money.
pub type UnitCode = u8;
/// Highest unit code.
pub const MAX_UNIT: UnitCode = 3;

/// One ledger mutation, or (version 2) a state the charging layer keeps with them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Reserve {
        reservation: u64,
        account: Account,
        unit: UnitCode,
        amount: u64,
        expires: i64,
    },
    Commit {
        reservation: u64,
        account: Account,
        unit: UnitCode,
        reserved: u64,
        used: u64,
    },
    CommitRated {
        reservation: u64,
        account: Account,
        reserved: u64,
        octets: u64,
        price: (u128, u128),
    },
    Release {
        reservation: u64,
        account: Account,
        unit: UnitCode,
        amount: u64,
    },
    Refund {
        account: Account,
        unit: UnitCode,
        amount: u64,
    },
    Session(Vec<u8>),
    Usage(Vec<u8>),
    SessionClosed(Vec<u8>),
    /// (Version 3) A threshold fired: replay marks it fired again, and the store turns it
    /// into an event.
    Threshold(Box<Fired>),
    /// (Version 3) Any other event (a block, a move, an aborted session, a policy applied at
    /// a limit): a JSON object with at least `kind`, `tenant`, `path` and `time`, for the
    /// outbox. Replay does nothing with it.
    Event(Vec<u8>),
    /// (Version 4) The service classes (0: none) of the ledger op that follows it (Reserve,
    /// Commit, CommitRated or Release): the class limits that count it. An op with no such
    /// record before it belongs to no class.
    Classes([u32; 2]),
}

/// A threshold that fired, as the journal keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fired {
    /// The node whose limit it is a level of.
    pub account: Account,
    pub unit: UnitCode,
    /// 0 day, 1 month, 2 total.
    pub period: u8,
    /// When the period it fired in ends.
    pub period_end: i64,
    /// One of the accounts' default levels (else one of the node's own thresholds).
    pub default: bool,
    /// Its place among the levels of the counter.
    pub bit: u8,
    /// The level: a percentage of the limit (1-100), or an amount.
    pub level: FiredLevel,
    pub used: u64,
    pub limit: u64,
    /// The tenant and the node's path, as the event names them ("acme/sales").
    pub path: String,
    /// (Version 4) The service class of the limit ("roaming", "video"); empty: a general
    /// limit.
    pub class: String,
}

/// A threshold's level as the journal keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FiredLevel {
    Percent(u8),
    Amount(u64),
}

/// The most octets of data (a session's state, a usage record) one op may carry: what a
/// journal record of version 2 holds (1 MiB) less its 17-octet header. The store checks that
/// its format agrees.
pub const MAX_DATA: usize = (1 << 20) - 17;
