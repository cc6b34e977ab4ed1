//! [`NatsStore`]: state in a JetStream key-value entry, over the JetStream
//! API directly (the stream `KV_{bucket}`, one value per key).

use crate::NatsBus;
use crate::base64::decode_base64;
use async_trait::async_trait;
use keyman_transport::{BusError, ErrorDetail, StateStore};
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
        }
    }
}

/// A [`StateStore`] in one entry of a NATS JetStream key-value bucket. Made by
/// [`NatsBus::state_store`].
#[derive(Clone)]
pub struct NatsStore {
    pub(crate) bus: NatsBus,
    pub(crate) bucket: String,
    pub(crate) key: String,
    ready: Arc<tokio::sync::OnceCell<()>>,
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
        let timeout = self.bus.options().operation_timeout;
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

#[async_trait]
impl StateStore for NatsStore {
    async fn load(&self) -> Result<Option<Vec<u8>>, BusError> {
        self.ensure_stream().await?;
        let body = serde_json::to_vec(&serde_json::json!({ "last_by_subj": self.subject() }))
            .unwrap_or_default();
        let subject = format!("$JS.API.STREAM.MSG.GET.{}", self.stream());
        let Some(answer) = self.api(&subject, &body, &[NO_MESSAGE_FOUND]).await? else {
            return Ok(None);
        };
        let data = answer
            .pointer("/message/data")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        decode_base64(data)
            .map(Some)
            .ok_or_else(|| BusError::Broker("a stored value that is not base64".into()))
    }

    async fn save(&self, state: &[u8]) -> Result<(), BusError> {
        self.ensure_stream().await?;
        // Publishing on the key's subject with a request waits for JetStream's ack.
        self.api(&self.subject(), state, &[]).await.map(drop)
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
