//! The JetStream API calls a [`NatsStore`] is made of: the stream, reading,
//! writing (optionally expecting a sequence), removing and listing entries.

use super::{
    AT_ONCE, NO_MESSAGE_FOUND, NatsStore, STREAM_NAME_IN_USE, SUBJECTS_OVERLAP, WRONG_LAST_SEQUENCE,
};
use crate::base64::decode_base64;
use keyman_transport::{BusError, ErrorDetail, Records, StateStore};

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
    pub(super) fn entry_subject(&self, entry: &str) -> String {
        format!("$KV.{}.{entry}", self.bucket)
    }

    /// The last value of `entry` and its sequence.
    pub(super) async fn get(&self, entry: &str) -> Result<Option<(u64, Vec<u8>)>, BusError> {
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
    /// (0: only if it has none; `Ok(None)` if not). Returns the new sequence.
    pub(super) async fn put(
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

    /// Removes `entry`.
    pub(super) async fn purge(&self, entry: &str) -> Result<(), BusError> {
        let body = serde_json::to_vec(&serde_json::json!({ "filter": self.entry_subject(entry) }))
            .unwrap_or_default();
        let subject = format!("$JS.API.STREAM.PURGE.{}", self.stream());
        self.api(&subject, &body, &[]).await.map(drop)
    }

    /// Removes `entries`, [`AT_ONCE`] at a time; what cannot be removed
    /// stays as garbage for the next claim, with a debug line.
    pub(super) async fn purge_all(&self, entries: &[String]) {
        for chunk in entries.chunks(AT_ONCE) {
            let done = futures_util::future::join_all(chunk.iter().map(|e| self.purge(e))).await;
            if let Some(Err(err)) = done.into_iter().find(Result::is_err) {
                tracing::debug!(%err, store = %self.describe(), "could not remove old state entries");
                return;
            }
        }
    }

    /// Writes each `(entry, value)`, [`AT_ONCE`] at a time.
    pub(super) async fn put_all(&self, writes: &[(String, &[u8])]) -> Result<(), BusError> {
        for chunk in writes.chunks(AT_ONCE) {
            let done =
                futures_util::future::join_all(chunk.iter().map(|(e, v)| self.put(e, v, None)))
                    .await;
            for put in done {
                put?;
            }
        }
        Ok(())
    }

    /// Reads each `(record, entry)`; `None` if an entry has no value.
    pub(super) async fn get_all(
        &self,
        entries: &[(String, String)],
    ) -> Result<Option<Records>, BusError> {
        let mut records = Records::new();
        for chunk in entries.chunks(AT_ONCE) {
            let values =
                futures_util::future::join_all(chunk.iter().map(|(_, e)| self.get(e))).await;
            for ((name, _), value) in chunk.iter().zip(values) {
                match value? {
                    Some((_, v)) => {
                        records.insert(name.clone(), v);
                    }
                    None => return Ok(None),
                }
            }
        }
        Ok(Some(records))
    }

    /// The names of the entries under this store's entry name whose names
    /// start with `part` (all of them for `None`).
    pub(super) async fn names(&self, part: Option<&str>) -> Result<Vec<String>, BusError> {
        let prefix = format!("$KV.{}.{}.", self.bucket, self.key);
        let filter = match part {
            Some(p) => format!("{prefix}{p}.>"),
            None => format!("{prefix}>"),
        };
        let subject = format!("$JS.API.STREAM.INFO.{}", self.stream());
        let mut names = Vec::new();
        let mut offset = 0u64;
        loop {
            let body = serde_json::to_vec(&serde_json::json!({
                "subjects_filter": filter,
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
                    .map(str::to_owned),
            );
            if page.is_empty() || offset >= total {
                break;
            }
        }
        Ok(names)
    }
}
