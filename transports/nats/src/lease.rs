//! [`NatsLease`]: a lease in a JetStream key-value entry, written with
//! compare-and-set on the entry's last sequence.

use crate::base64::decode_base64;
use crate::store::{NO_MESSAGE_FOUND, WRONG_LAST_SEQUENCE};
use crate::{NatsBus, NatsStore};
use async_trait::async_trait;
use keyman_transport::{BusError, Lease};
use std::time::Duration;

impl NatsBus {
    /// A [`Lease`] in entry `key` of the JetStream key-value bucket `bucket`
    /// (the same stream layout as [`NatsBus::state_store`]).
    ///
    /// The entry holds the holder and when its lease expires, in wall-clock
    /// milliseconds: **the orchestrators' clocks must agree to within a
    /// fraction of the time to live** (well under half of it), or a standby
    /// whose clock runs ahead may take the lease while its holder still
    /// serves. Writes are conditional on the entry's last sequence, so of two
    /// orchestrators that read the same entry only one can write it.
    pub fn lease(&self, bucket: impl Into<String>, key: impl Into<String>) -> NatsLease {
        NatsLease {
            entry: self.state_store(bucket, key),
        }
    }
}

/// A [`Lease`] in one entry of a NATS JetStream key-value bucket: the value
/// is `{"holder": .., "expires_ms": ..}`, written with the header
/// `Nats-Expected-Last-Subject-Sequence` so that JetStream refuses a write
/// when someone else wrote in between. Expiry is by the wall clock; see
/// [`NatsBus::lease`]. Made by [`NatsBus::lease`].
#[derive(Clone)]
pub struct NatsLease {
    entry: NatsStore,
}

impl std::fmt::Debug for NatsLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsLease")
            .field("server", &self.entry.bus.server())
            .field("bucket", &self.entry.bucket)
            .field("key", &self.entry.key)
            .finish()
    }
}

/// What a lease entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LeaseEntry {
    /// The sequence of the entry's last message, 0 if it has none.
    seq: u64,
    /// The holder and when its lease expires (wall-clock ms), if the entry names one.
    held: Option<(String, u64)>,
}

/// The wall clock in milliseconds since the Unix epoch.
fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Reads a lease value; `None` for anything that is not one (treated as free).
fn parse_lease_value(bytes: &[u8]) -> Option<(String, u64)> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let holder = value.get("holder")?.as_str()?;
    let expires_ms = value.get("expires_ms")?.as_u64()?;
    (!holder.is_empty()).then(|| (holder.to_owned(), expires_ms))
}

impl NatsLease {
    /// The entry's last message.
    async fn read(&self) -> Result<LeaseEntry, BusError> {
        let entry = &self.entry;
        entry.ensure_stream().await?;
        let body = serde_json::to_vec(&serde_json::json!({ "last_by_subj": entry.subject() }))
            .unwrap_or_default();
        let subject = format!("$JS.API.STREAM.MSG.GET.{}", entry.stream());
        let Some(answer) = entry.api(&subject, &body, &[NO_MESSAGE_FOUND]).await? else {
            return Ok(LeaseEntry { seq: 0, held: None });
        };
        let seq = answer
            .pointer("/message/seq")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| BusError::Broker("a JetStream message without a sequence".into()))?;
        let data = answer
            .pointer("/message/data")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        let held = decode_base64(data).and_then(|bytes| parse_lease_value(&bytes));
        Ok(LeaseEntry { seq, held })
    }

    /// Writes the entry if its last message is still `seq`; `false` if someone
    /// wrote it meanwhile.
    async fn write(&self, seq: u64, holder: &str, expires_ms: u64) -> Result<bool, BusError> {
        let body = serde_json::to_vec(&serde_json::json!({
            "holder": holder,
            "expires_ms": expires_ms,
        }))
        .unwrap_or_default();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Expected-Last-Subject-Sequence", seq.to_string());
        let written = self
            .entry
            .api_with_headers(
                &self.entry.subject(),
                Some(headers),
                &body,
                &[WRONG_LAST_SEQUENCE],
            )
            .await?;
        Ok(written.is_some())
    }
}

impl NatsLease {
    /// Who holds the lease now, by the wall clock (`None` if free or expired).
    pub(crate) async fn holder_now(&self) -> Result<Option<String>, BusError> {
        let entry = self.read().await?;
        Ok(entry
            .held
            .filter(|(_, expires_ms)| *expires_ms > wall_clock_ms())
            .map(|(holder, _)| holder))
    }
}

#[async_trait]
impl Lease for NatsLease {
    async fn try_acquire(&self, holder: &str, ttl: Duration) -> Result<bool, BusError> {
        let entry = self.read().await?;
        let now = wall_clock_ms();
        if let Some((current, expires_ms)) = &entry.held
            && current != holder
            && *expires_ms > now
        {
            return Ok(false);
        }
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.write(entry.seq, holder, now.saturating_add(ttl_ms))
            .await
    }

    async fn release(&self, holder: &str) -> Result<(), BusError> {
        let entry = self.read().await?;
        if entry
            .held
            .as_ref()
            .is_some_and(|(current, _)| current == holder)
        {
            // Refused only if someone wrote meanwhile: then it is not ours any more.
            self.write(entry.seq, "", 0).await?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "NATS key-value {}/{} on {}",
            self.entry.bucket,
            self.entry.key,
            self.entry.bus.server()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::parse_lease_value;

    #[test]
    fn reads_lease_values_and_treats_anything_else_as_free() {
        assert_eq!(
            parse_lease_value(br#"{"holder": "a-1", "expires_ms": 42}"#),
            Some(("a-1".to_owned(), 42))
        );
        assert_eq!(
            parse_lease_value(br#"{"holder": "", "expires_ms": 0}"#),
            None
        );
        assert_eq!(
            parse_lease_value(br#"{"holder": 7, "expires_ms": 1}"#),
            None
        );
        assert_eq!(parse_lease_value(b"not json"), None);
    }
}
