//! A partition's replicated log: one JetStream stream per partition (`OCFD_P<n>`, subject
//! `ocfd.p.<n>`), kept on `replicas` servers. Its owner appends what the local journal and
//! change log hold (the same frozen bytes), each publish naming the stream's last sequence it
//! expects. A new owner first appends a takeover entry with its epoch; from then on the deposed
//! owner, whose expected sequence is behind, is refused by the server: two owners can never both
//! append. Standbys and a new owner read the entries from any sequence.

use async_nats::jetstream;
use async_nats::jetstream::context::{Publish, PublishErrorKind};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;

/// What an entry holds; its first octet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A batch of ledger journal records, as the group commit wrote them.
    Records,
    /// An account change, as the change log holds it (or the last piece of one too large
    /// for one message).
    Change,
    /// A piece of an account change too large for one message; the pieces and the `Change`
    /// entry that ends them are the change (a takeover between them drops the pieces).
    ChangePart,
    /// A new owner took the partition: its epoch (u64, little-endian).
    Takeover,
}

impl Kind {
    fn octet(self) -> u8 {
        match self {
            Kind::Records => b'R',
            Kind::Change => b'C',
            Kind::ChangePart => b'c',
            Kind::Takeover => b'T',
        }
    }

    fn of(octet: u8) -> Option<Kind> {
        match octet {
            b'R' => Some(Kind::Records),
            b'C' => Some(Kind::Change),
            b'c' => Some(Kind::ChangePart),
            b'T' => Some(Kind::Takeover),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Someone else appended since this node's last entry: it no longer owns the partition.
    #[error("partition {0}: another owner appended; this node is fenced off")]
    Fenced(u32),
    #[error("partition {partition}: {reason}")]
    Nats { partition: u32, reason: String },
    /// The entries wanted were cut from the log: a copy starts again from the snapshot.
    #[error(
        "partition {partition}: entry {wanted} was cut from the log (it starts at {first}); the copy starts again from the partition's snapshot"
    )]
    Cut {
        partition: u32,
        wanted: u64,
        first: u64,
    },
    #[error("partition {partition}, entry {sequence}: not an entry of ocfd's ({reason})")]
    Damaged {
        partition: u32,
        sequence: u64,
        reason: String,
    },
}

/// One entry read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub sequence: u64,
    pub kind: Kind,
    pub body: Bytes,
}

/// A partition's log as one node appends to it and reads it.
pub struct PartitionLog {
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    partition: u32,
    subject: String,
    /// The stream's last sequence as this node last saw or wrote it.
    last: u64,
    /// The epoch this node took the log over at (0: it has not): with `last`, the id that
    /// makes a repeated publish idempotent.
    epoch: u64,
    /// The server's largest message.
    max_payload: usize,
}

/// How long an append goes on trying through a lost server or a leader election.
const APPEND_PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);

impl PartitionLog {
    /// Opens (or makes) the partition's stream, kept on `replicas` servers.
    pub async fn open(
        js: &jetstream::Context,
        partition: u32,
        replicas: usize,
        max_payload: usize,
    ) -> Result<PartitionLog, LogError> {
        let nats = |e: String| LogError::Nats {
            partition,
            reason: e,
        };
        let subject = format!("ocfd.p.{partition}");
        let mut stream = js
            .get_or_create_stream(jetstream::stream::Config {
                name: format!("OCFD_P{partition}"),
                subjects: vec![subject.clone()],
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| nats(e.to_string()))?;
        let last = stream
            .info()
            .await
            .map_err(|e| nats(e.to_string()))?
            .state
            .last_sequence;
        Ok(PartitionLog {
            js: js.clone(),
            stream,
            partition,
            subject,
            last,
            epoch: 0,
            max_payload,
        })
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The most octets an entry's body may hold: what the server takes in one message
    /// (`max_payload`, 1 MiB by default), less room for the headers.
    pub fn max_entry_bytes(&self) -> usize {
        self.max_payload.saturating_sub(4096).max(64 << 10)
    }

    /// The stream's last sequence as this node last saw or wrote it.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Appends an entry if nothing was appended since this node's last look: its sequence,
    /// once the stream's servers have it. [`LogError::Fenced`] if another owner appended.
    ///
    /// A publish whose answer was lost (a server died, the stream's leader moved) is sent
    /// again with the same message id, which the stream keeps once: the entry is stored once
    /// whatever the retries. The id names the owner's epoch, so two owners' entries never pass
    /// for each other.
    pub async fn append(&mut self, kind: Kind, body: &[u8]) -> Result<u64, LogError> {
        let mut payload = Vec::with_capacity(1 + body.len());
        payload.push(kind.octet());
        payload.extend_from_slice(body);
        let payload = Bytes::from(payload);
        let id = format!("{}-{}", self.epoch, self.last);
        let deadline = tokio::time::Instant::now() + APPEND_PATIENCE;
        let mut pause = std::time::Duration::from_millis(50);
        loop {
            let publish = Publish::build()
                .payload(payload.clone())
                .message_id(&id)
                .expected_last_sequence(self.last);
            let ack = match self.js.send_publish(self.subject.clone(), publish).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            let error = match ack {
                Ok(ack) => {
                    self.last = ack.sequence;
                    return Ok(ack.sequence);
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    return Err(LogError::Fenced(self.partition));
                }
                Err(e) => e,
            };
            if tokio::time::Instant::now() + pause > deadline {
                return Err(LogError::Nats {
                    partition: self.partition,
                    reason: error.to_string(),
                });
            }
            // Through an election: again in a moment, with the same id.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_secs(1));
        }
    }

    /// Takes the partition's log over at `epoch`: reads to its end (the caller replays what it
    /// has not yet), then appends the takeover entry that fences off the previous owner.
    pub async fn take_over(&mut self, epoch: u64) -> Result<u64, LogError> {
        self.last = self
            .stream
            .info()
            .await
            .map_err(|e| LogError::Nats {
                partition: self.partition,
                reason: e.to_string(),
            })?
            .state
            .last_sequence;
        self.epoch = epoch;
        self.append(Kind::Takeover, &epoch.to_le_bytes()).await
    }

    /// Removes the entries before `entry` (a snapshot includes them): the stream keeps
    /// `entry` and what follows.
    pub async fn cut(&self, entry: u64) -> Result<(), LogError> {
        self.stream
            .purge()
            .sequence(entry)
            .await
            .map(|_| ())
            .map_err(|e| LogError::Nats {
                partition: self.partition,
                reason: e.to_string(),
            })
    }

    /// The stream's first entry now (entries before it were cut; past its last if empty).
    pub async fn first(&mut self) -> Result<u64, LogError> {
        self.stream
            .info()
            .await
            .map(|i| i.state.first_sequence)
            .map_err(|e| LogError::Nats {
                partition: self.partition,
                reason: e.to_string(),
            })
    }

    /// The epoch this node took the log over at (0: it has not).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The entries from `from` on, at most `limit`, oldest first. [`LogError::Cut`] if the
    /// log no longer holds `from` (a snapshot includes it).
    pub async fn read(&mut self, from: u64, limit: usize) -> Result<Vec<Entry>, LogError> {
        let mut out = Vec::new();
        let mut sequence = from.max(1);
        while out.len() < limit {
            let message = match self.stream.get_raw_message(sequence).await {
                Ok(m) => m,
                // Cut before it, or past the end (done).
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                    let first = self.first().await?;
                    if sequence < first {
                        return Err(LogError::Cut {
                            partition: self.partition,
                            wanted: sequence,
                            first,
                        });
                    }
                    break;
                }
                Err(e) => {
                    return Err(LogError::Nats {
                        partition: self.partition,
                        reason: e.to_string(),
                    });
                }
            };
            let payload = message.payload;
            let Some((&first, _)) = payload.split_first() else {
                return Err(self.damaged(sequence, "empty"));
            };
            let kind = Kind::of(first).ok_or_else(|| self.damaged(sequence, "unknown kind"))?;
            out.push(Entry {
                sequence,
                kind,
                body: payload.slice(1..),
            });
            sequence += 1;
        }
        Ok(out)
    }

    /// The entries from `from` on as they come, for a standby that keeps up with the owner.
    pub async fn follow(&self, from: u64) -> Result<Follower, LogError> {
        let nats = |e: String| LogError::Nats {
            partition: self.partition,
            reason: e,
        };
        let messages = self
            .stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from.max(1),
                },
                ..Default::default()
            })
            .await
            .map_err(|e| nats(e.to_string()))?
            .messages()
            .await
            .map_err(|e| nats(e.to_string()))?;
        Ok(Follower {
            messages,
            partition: self.partition,
        })
    }

    fn damaged(&self, sequence: u64, reason: &str) -> LogError {
        LogError::Damaged {
            partition: self.partition,
            sequence,
            reason: reason.to_owned(),
        }
    }
}

/// A partition's entries as they are appended (an ordered consumer: it starts again where it
/// was if its server goes).
pub struct Follower {
    messages: jetstream::consumer::pull::Ordered,
    partition: u32,
}

impl Follower {
    /// The next entry, waiting for it to be appended.
    pub async fn next(&mut self) -> Result<Entry, LogError> {
        let nats = |e: String| LogError::Nats {
            partition: self.partition,
            reason: e,
        };
        let message = std::future::poll_fn(|cx| {
            futures_core::Stream::poll_next(std::pin::Pin::new(&mut self.messages), cx)
        })
        .await
        .ok_or_else(|| nats("the stream's consumer ended".into()))?
        .map_err(|e| nats(e.to_string()))?;
        let sequence = message
            .info()
            .map_err(|e| nats(e.to_string()))?
            .stream_sequence;
        let damaged = |reason: &str| LogError::Damaged {
            partition: self.partition,
            sequence,
            reason: reason.to_owned(),
        };
        let payload = message.payload.clone();
        let (&first, _) = payload.split_first().ok_or_else(|| damaged("empty"))?;
        let kind = Kind::of(first).ok_or_else(|| damaged("unknown kind"))?;
        Ok(Entry {
            sequence,
            kind,
            body: payload.slice(1..),
        })
    }
}
