//! Who is calling: the role and scope of the token a request came with, and the caller of the
//! request being worked on (for the `by` of the changes it makes). Below both the access check
//! and the handlers, so neither reaches into the other for it.

use serde::{Deserialize, Serialize};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Operator,
    Manager,
    Viewer,
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    /// A tenant or a node path; none: everything.
    pub scope: Option<String>,
}

tokio::task_local! {
    /// The caller of the request being worked on (set by `authorize` around the handler), so
    /// that every change names who made it without each handler passing it along.
    pub static CALLER: Caller;
}

/// The name of the token the request being worked on came with (none outside a request).
pub fn caller_name() -> Option<String> {
    CALLER.try_with(|c| c.name.clone()).ok()
}
