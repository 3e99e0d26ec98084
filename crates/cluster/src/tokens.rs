//! The admin API's named tokens, shared by every node: the JetStream key-value bucket
//! `ocfd_tokens`, a key per token (its name in hex), its value what the daemon keeps of it
//! (role, scope, the token's SHA-256; never the token). A token made through one node's API is
//! created here first (refused if the name is taken, whichever node took it), revoked here
//! first, and every node follows the bucket: a manager's token goes on working on whichever
//! node owns its tenant's partition after a takeover.

use async_nats::jetstream;
use async_nats::jetstream::kv;
use bytes::Bytes;

use crate::lease::LeaseError;

/// The bucket of named tokens.
pub const BUCKET: &str = "ocfd_tokens";
/// Set once a node has put its own tokens in the bucket (the first node of a cluster, or an
/// upgrade): later nodes take the bucket's, so a token revoked while a node was down does not
/// come back with it.
const SEEDED: &str = "seeded";

fn key(name: &str) -> String {
    format!("t.{}", crate::keys::hex(name.as_bytes()))
}

fn name_of(key: &str) -> Option<String> {
    String::from_utf8(crate::keys::unhex(key.strip_prefix("t.")?)?).ok()
}

/// What [`SharedTokens::create`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    Made,
    /// A token of that name exists already.
    Taken,
}

/// The bucket, opened.
pub struct SharedTokens {
    kv: kv::Store,
}

impl SharedTokens {
    /// Opens (or makes) the bucket, kept on `replicas` servers.
    pub async fn open(
        js: &jetstream::Context,
        replicas: usize,
    ) -> Result<SharedTokens, LeaseError> {
        let kv = crate::lease::bucket(js, BUCKET, replicas, None).await?;
        Ok(SharedTokens { kv })
    }

    /// Creates token `name`, unless one of that name exists.
    pub async fn create(&self, name: &str, value: Bytes) -> Result<Created, LeaseError> {
        match self.kv.create(key(name), value).await {
            Ok(_) => Ok(Created::Made),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(Created::Taken),
            Err(e) => Err(LeaseError::Bucket(e.to_string())),
        }
    }

    /// Revokes token `name` (whether or not there is one).
    pub async fn revoke(&self, name: &str) -> Result<(), LeaseError> {
        self.kv
            .delete(key(name))
            .await
            .map_err(|e| LeaseError::Bucket(e.to_string()))
    }

    /// Puts `tokens` (name, value) in the bucket if no node did so before (see `SEEDED`);
    /// whether it did.
    pub async fn seed(&self, tokens: Vec<(String, Bytes)>) -> Result<bool, LeaseError> {
        let bucket = |e: String| LeaseError::Bucket(e);
        match self.kv.create(SEEDED, Bytes::from_static(b"1")).await {
            Ok(_) => {}
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(bucket(e.to_string())),
        }
        for (name, value) in tokens {
            match self.kv.create(key(&name), value).await {
                Ok(_) => {}
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(bucket(e.to_string())),
            }
        }
        Ok(true)
    }

    /// Hands `changed` every token as the bucket holds it (its value, or `None` once revoked),
    /// first all of them, then each change; watches again after `pause` when the watch is
    /// lost, until `changed` says to stop (returns false).
    pub async fn follow(
        &self,
        changed: impl Fn(&str, Option<&[u8]>) -> bool,
        pause: std::time::Duration,
    ) {
        crate::keys::follow(&self.kv, "t.>", "the shared tokens", pause, |entry| {
            let Some(name) = name_of(&entry.key) else {
                return true;
            };
            let value = match entry.operation {
                kv::Operation::Put => Some(&entry.value[..]),
                _ => None,
            };
            changed(&name, value)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_tokens() {
        for name in ["alice", "ops team", "é/..*>"] {
            let k = key(name);
            assert!(
                k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'),
                "{k}"
            );
            assert_eq!(name_of(&k).as_deref(), Some(name));
        }
        assert_eq!(name_of("seeded"), None);
        assert_eq!(name_of("t.abc"), None);
    }
}
