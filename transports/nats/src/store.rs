//! [`NatsStore`]: state in a JetStream key-value entry, over the JetStream
//! API directly (the stream `KV_{bucket}`, one value per key).

use crate::NatsBus;
use crate::base64::decode_base64;
use async_trait::async_trait;
use keyman_transport::{BusError, ErrorDetail, Records, Saved, StateStore, StateWrite};
use std::sync::Arc;

impl NatsBus {
    /// A [`StateStore`] in entry `key` of the JetStream key-value bucket
    /// `bucket` (its stream `KV_{bucket}` is created on first use, keeping one
    /// value per key; the server must run with JetStream). Values are limited
    /// by the server's largest message (1 MiB by default). It speaks the
    /// JetStream API directly, so it works with servers from 2.9 on.
    pub fn state_store(&self, bucket: impl Into<String>, key: impl Into<String>) -> NatsStore {
        NatsStore {
            bus: self.clone(),
            bucket: bucket.into(),
            key: key.into(),
            ready: Arc::new(tokio::sync::OnceCell::new()),
            fence: None,
        }
    }
}

/// What fences a [`NatsStore`]: the lease, the fence entry, and the holder
/// and sequence of this store's last write of the fence entry.
#[derive(Clone)]
pub(crate) struct Fence {
    lease: Box<crate::NatsLease>,
    entry: String,
    claimed: Arc<std::sync::Mutex<Option<(String, u64)>>>,
}

/// A [`StateStore`] in entries of a NATS JetStream key-value bucket: the
/// record `meta` in entry `key` (where older keyman versions kept their one
/// value), every other record `r` in entry `key.r`, copies set aside in
/// `key.unreadable.<ms>[.r]`. Made by [`NatsBus::state_store`]; fenced by
/// [`NatsStore::fenced_by`].
#[derive(Clone)]
pub struct NatsStore {
    pub(crate) bus: NatsBus,
    pub(crate) bucket: String,
    pub(crate) key: String,
    ready: Arc<tokio::sync::OnceCell<()>>,
    fence: Option<Fence>,
}

impl std::fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStore")
            .field("server", &self.bus.server())
            .field("bucket", &self.bucket)
            .field("key", &self.key)
            .finish()
    }
}

/// JetStream's error code for "wrong last sequence": someone else wrote the
/// subject since it was read.
pub(crate) const WRONG_LAST_SEQUENCE: u64 = 10071;
/// JetStream's error code for "stream name already in use".
const STREAM_NAME_IN_USE: u64 = 10058;
/// JetStream's error code for "subjects overlap with an existing stream": what
/// the slower of two clients creating the same stream at once may get.
const SUBJECTS_OVERLAP: u64 = 10065;
/// JetStream's error code for "no message found".
pub(crate) const NO_MESSAGE_FOUND: u64 = 10037;

impl NatsStore {
    pub(crate) fn stream(&self) -> String {
        format!("KV_{}", self.bucket)
    }

    pub(crate) fn subject(&self) -> String {
        format!("$KV.{}.{}", self.bucket, self.key)
    }

    /// A JetStream API call: the JSON answer, or its `error` as a [`BusError`]
    /// unless its code is one of `tolerated` (then `None`).
    pub(crate) async fn api(
        &self,
        subject: &str,
        body: &[u8],
        tolerated: &[u64],
    ) -> Result<Option<serde_json::Value>, BusError> {
        self.api_with_headers(subject, None, body, tolerated).await
    }

    /// [`api`](Self::api) with message headers.
    pub(crate) async fn api_with_headers(
        &self,
        subject: &str,
        headers: Option<async_nats::HeaderMap>,
        body: &[u8],
        tolerated: &[u64],
    ) -> Result<Option<serde_json::Value>, BusError> {
        let timeout = self.bus.options().connection.operation_timeout;
        let answer = self
            .bus
            .shared
            .request(subject, headers, body, timeout)
            .await
            .map_err(|e| match e {
                BusError::NoResponders(_) => BusError::Broker(ErrorDetail::with_source(
                    format!(
                        "JetStream is not enabled on the NATS server at {}",
                        self.bus.server()
                    ),
                    e,
                )),
                other => other,
            })?;
        let value: serde_json::Value = serde_json::from_slice(&answer).map_err(|e| {
            BusError::Broker(ErrorDetail::with_source(
                format!("unreadable JetStream answer: {e}"),
                e,
            ))
        })?;
        match value.get("error") {
            None => Ok(Some(value)),
            Some(err)
                if err
                    .get("err_code")
                    .and_then(serde_json::Value::as_u64)
                    .is_some_and(|code| tolerated.contains(&code)) =>
            {
                Ok(None)
            }
            Some(err) => Err(BusError::Broker(
                format!(
                    "JetStream on {}: {}",
                    self.bus.server(),
                    err.get("description")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("an error without description")
                )
                .into(),
            )),
        }
    }

    async fn get_owned(&self, entry: String) -> Result<Option<(u64, Vec<u8>)>, BusError> {
        self.get(&entry).await
    }

    async fn put_plain(&self, entry: String, value: &[u8]) -> Result<Option<u64>, BusError> {
        self.put(&entry, value, None).await
    }

    pub(crate) async fn ensure_stream(&self) -> Result<(), BusError> {
        self.ready
            .get_or_try_init(|| async {
                let config = serde_json::json!({
                    "name": self.stream(),
                    "subjects": [format!("$KV.{}.>", self.bucket)],
                    "max_msgs_per_subject": 1,
                    "discard": "new",
                    "storage": "file",
                    "num_replicas": 1,
                    "allow_rollup_hdrs": true,
                    "deny_delete": true,
                    "allow_direct": true,
                });
                let body = serde_json::to_vec(&config).unwrap_or_default();
                let subject = format!("$JS.API.STREAM.CREATE.{}", self.stream());
                self.api(&subject, &body, &[STREAM_NAME_IN_USE, SUBJECTS_OVERLAP])
                    .await
                    .map(drop)
            })
            .await
            .map(drop)
    }
}

impl NatsStore {
    /// This store, fenced by `lease`: loading with a holder checks that it
    /// holds the lease and claims the fence entry `fence.{key}` for it (a
    /// write with `Nats-Expected-Last-Subject-Sequence`); every fenced save
    /// first writes the fence entry again, expecting the sequence of its own
    /// last write, so once another holder has claimed it the save is refused
    /// before it writes anything. (Between that check and the writes of one
    /// save there is no fence: a server with atomic batches or
    /// `Nats-Expected-Last-Subject-Sequence-Subject` could close that gap.)
    pub fn fenced_by(mut self, lease: &crate::NatsLease) -> Self {
        self.fence = Some(Fence {
            lease: Box::new(lease.clone()),
            entry: format!("fence.{}", self.key),
            claimed: Arc::new(std::sync::Mutex::new(None)),
        });
        self
    }

    fn entry_subject(&self, entry: &str) -> String {
        format!("$KV.{}.{entry}", self.bucket)
    }

    /// The entry of record `name`.
    fn record_entry(&self, name: &str) -> String {
        if name == "meta" {
            self.key.clone()
        } else {
            format!("{}.{name}", self.key)
        }
    }

    /// The last value of `entry` and its sequence.
    async fn get(&self, entry: &str) -> Result<Option<(u64, Vec<u8>)>, BusError> {
        let body =
            serde_json::to_vec(&serde_json::json!({ "last_by_subj": self.entry_subject(entry) }))
                .unwrap_or_default();
        let subject = format!("$JS.API.STREAM.MSG.GET.{}", self.stream());
        let Some(answer) = self.api(&subject, &body, &[NO_MESSAGE_FOUND]).await? else {
            return Ok(None);
        };
        let seq = answer
            .pointer("/message/seq")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        let data = answer
            .pointer("/message/data")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        decode_base64(data)
            .map(|v| Some((seq, v)))
            .ok_or_else(|| BusError::Broker("a stored value that is not base64".into()))
    }

    /// Writes `entry`; with `expected`, only if its last sequence is that
    /// (`Ok(None)` if not). Returns the new sequence.
    async fn put(
        &self,
        entry: &str,
        value: &[u8],
        expected: Option<u64>,
    ) -> Result<Option<u64>, BusError> {
        let headers = expected.map(|seq| {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Expected-Last-Subject-Sequence", seq.to_string());
            headers
        });
        let ack = self
            .api_with_headers(
                &self.entry_subject(entry),
                headers,
                value,
                &[WRONG_LAST_SEQUENCE],
            )
            .await?;
        Ok(ack.map(|a| {
            a.get("seq")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        }))
    }

    /// The entries under `key.` (not the copies set aside).
    async fn record_entries(&self) -> Result<Vec<String>, BusError> {
        let prefix = format!("$KV.{}.{}.", self.bucket, self.key);
        let subject = format!("$JS.API.STREAM.INFO.{}", self.stream());
        let mut names = Vec::new();
        let mut offset = 0u64;
        loop {
            let body = serde_json::to_vec(&serde_json::json!({
                "subjects_filter": format!("{prefix}>"),
                "offset": offset,
            }))
            .unwrap_or_default();
            let Some(info) = self.api(&subject, &body, &[]).await? else {
                break;
            };
            let page: Vec<String> = info
                .pointer("/state/subjects")
                .and_then(serde_json::Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            let total = info
                .get("total")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            offset += page.len() as u64;
            names.extend(
                page.iter()
                    .filter_map(|s| s.strip_prefix(&prefix))
                    .filter(|n| !n.starts_with("unreadable."))
                    .map(str::to_owned),
            );
            if page.is_empty() || offset >= total {
                break;
            }
        }
        Ok(names)
    }

    /// Checks that `holder` holds the lease and claims the fence entry for it.
    async fn claim(&self, fence: &Fence, holder: &str) -> Result<bool, BusError> {
        if fence.lease.holder_now().await?.as_deref() != Some(holder) {
            return Ok(false);
        }
        for _ in 0..3 {
            let seq = self.get(&fence.entry).await?.map_or(0, |(seq, _)| seq);
            let value =
                serde_json::to_vec(&serde_json::json!({ "holder": holder })).unwrap_or_default();
            if let Some(new) = self.put(&fence.entry, &value, Some(seq)).await? {
                *fence.claimed.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((holder.to_owned(), new));
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether `holder` still has the fence: rewrites it expecting the
    /// sequence of its own last write (claims it first if it never did).
    async fn check_fence(&self, fence: &Fence, holder: &str) -> Result<bool, BusError> {
        let claimed = fence
            .claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match claimed {
            Some((h, seq)) if h == holder => {
                let value = serde_json::to_vec(&serde_json::json!({ "holder": holder }))
                    .unwrap_or_default();
                match self.put(&fence.entry, &value, Some(seq)).await? {
                    Some(new) => {
                        *fence.claimed.lock().unwrap_or_else(|e| e.into_inner()) = Some((h, new));
                        Ok(true)
                    }
                    None => Ok(false),
                }
            }
            _ => self.claim(fence, holder).await,
        }
    }
}

#[async_trait]
impl StateStore for NatsStore {
    async fn load(&self, fence: Option<&str>) -> Result<Option<Records>, BusError> {
        self.ensure_stream().await?;
        if let (Some(f), Some(holder)) = (&self.fence, fence)
            && !self.claim(f, holder).await?
        {
            return Err(BusError::Broker(
                "the lease is no longer held by this orchestrator".into(),
            ));
        }
        let mut records = Records::new();
        if let Some((_, meta)) = self.get(&self.key).await? {
            records.insert("meta".to_owned(), meta);
        }
        let names = self.record_entries().await?;
        for chunk in names.chunks(32) {
            let values = futures_util::future::join_all(
                chunk.iter().map(|n| self.get_owned(self.record_entry(n))),
            )
            .await;
            for (name, value) in chunk.iter().zip(values) {
                if let Some((_, v)) = value? {
                    records.insert(name.clone(), v);
                }
            }
        }
        Ok((!records.is_empty()).then_some(records))
    }

    async fn save(&self, write: &StateWrite, fence: Option<&str>) -> Result<Saved, BusError> {
        self.ensure_stream().await?;
        if let (Some(f), Some(holder)) = (&self.fence, fence)
            && !self.check_fence(f, holder).await?
        {
            return Ok(Saved::Fenced);
        }
        if write.replace {
            let stale: Vec<String> = self
                .record_entries()
                .await?
                .into_iter()
                .filter(|n| !write.records.contains_key(n))
                .collect();
            for name in stale {
                let body = serde_json::to_vec(&serde_json::json!({
                    "filter": self.entry_subject(&self.record_entry(&name)),
                }))
                .unwrap_or_default();
                let subject = format!("$JS.API.STREAM.PURGE.{}", self.stream());
                self.api(&subject, &body, &[]).await?;
            }
            if !write.records.contains_key("meta") && self.get(&self.key).await?.is_some() {
                let subject = format!("$JS.API.STREAM.PURGE.{}", self.stream());
                let body = serde_json::to_vec(&serde_json::json!({
                    "filter": self.entry_subject(&self.key),
                }))
                .unwrap_or_default();
                self.api(&subject, &body, &[]).await?;
            }
        }
        // Every record but `meta` first, 32 at a time; `meta` last.
        let others: Vec<(&String, &Vec<u8>)> =
            write.records.iter().filter(|(n, _)| *n != "meta").collect();
        for chunk in others.chunks(32) {
            let puts = futures_util::future::join_all(
                chunk
                    .iter()
                    .map(|(n, v)| self.put_plain(self.record_entry(n), v)),
            )
            .await;
            for put in puts {
                put?;
            }
        }
        if let Some(meta) = write.records.get("meta") {
            self.put(&self.key, meta, None).await?;
        }
        Ok(Saved::Written)
    }

    async fn set_aside(&self, stamp_ms: u64) -> Result<Option<String>, BusError> {
        let Some(records) = self.load(None).await? else {
            return Ok(None);
        };
        let copy = format!("{}.unreadable.{stamp_ms}", self.key);
        for (name, value) in &records {
            let entry = if name == "meta" {
                copy.clone()
            } else {
                format!("{copy}.{name}")
            };
            self.put(&entry, value, None).await?;
        }
        Ok(Some(format!("NATS key-value {}/{copy}", self.bucket)))
    }

    fn describe(&self) -> String {
        format!(
            "NATS key-value {}/{} on {}",
            self.bucket,
            self.key,
            self.bus.server()
        )
    }
}
