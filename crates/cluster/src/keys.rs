//! What the key-value buckets have in common: keys that spell any octets in hex (keys may hold
//! few characters), and following a bucket as it changes.

use async_nats::jetstream::kv;

/// `bytes` in lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The octets `hex` spells (None: not hex).
pub(crate) fn unhex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Hands `changed` every entry of `kv` under `filter`, first as they are, then each change;
/// watches again after `pause` when the watch is lost, until `changed` says to stop (returns
/// false). `what` names the bucket in logs.
pub(crate) async fn follow(
    kv: &kv::Store,
    filter: &str,
    what: &str,
    pause: std::time::Duration,
    mut changed: impl FnMut(&kv::Entry) -> bool,
) {
    use futures_core::Stream;
    loop {
        match kv.watch_with_history(filter).await {
            Ok(mut watch) => {
                while let Some(Ok(entry)) =
                    std::future::poll_fn(|cx| std::pin::Pin::new(&mut watch).poll_next(cx)).await
                {
                    if !changed(&entry) {
                        return;
                    }
                }
                tracing::warn!("the watch of {what} ended; watching again");
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch {what}; trying again"),
        }
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_spells_any_octets() {
        for s in ["", "alice", "é/..*>", "\u{0}"] {
            let h = super::hex(s.as_bytes());
            assert!(h.bytes().all(|b| b.is_ascii_hexdigit()), "{h}");
            assert_eq!(super::unhex(&h).as_deref(), Some(s.as_bytes()));
        }
        assert_eq!(super::unhex("abc"), None);
        assert_eq!(super::unhex("zz"), None);
    }
}
