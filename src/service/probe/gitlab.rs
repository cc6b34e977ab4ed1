//! GitLab's side of a probe: `GET {api}/api/v4/personal_access_tokens/self`
//! says whether the token is valid (not revoked, active), when it expires and
//! whose it is; its `RateLimit-*` headers, where the instance sends them, are
//! the quota of the resource `rest`.

use super::github::days_from_civil;
use super::http::{HttpProber, ProbeError, throttled};
use crate::probe::{ProbeFacts, ProbeOutcome, ProbeRequest, ResourceQuota};
use crate::ratelimit::RateLimit;
use crate::time::Timestamp;
use serde_json::Value;

/// The resource GitLab's `RateLimit-*` headers are reported as.
pub(super) const RESOURCE: &str = "rest";

pub(super) async fn probe(
    prober: &HttpProber,
    request: &ProbeRequest,
) -> Result<ProbeOutcome, ProbeError> {
    let answer = prober
        .get(
            prober.gitlab_url("/api/v4/personal_access_tokens/self"),
            &request.key,
        )
        .await?;
    match answer.status.as_u16() {
        200 => {}
        401 => return Ok(ProbeOutcome::Unauthorized),
        403 | 429 => return Ok(throttled(&answer)),
        other => return Err(ProbeError::Status(other)),
    }
    let body: Value =
        serde_json::from_slice(&answer.body).map_err(|_| ProbeError::Body("not JSON".into()))?;
    let revoked = body.get("revoked").and_then(Value::as_bool) == Some(true);
    let inactive = body.get("active").and_then(Value::as_bool) == Some(false);
    if revoked || inactive {
        return Ok(ProbeOutcome::Unauthorized);
    }
    let seen = RateLimit::from_header_map(&answer.headers);
    let resources = seen
        .remaining
        .map(|remaining| ResourceQuota {
            resource: RESOURCE.into(),
            limit: seen.limit,
            remaining: Some(remaining),
            reset: seen.reset,
        })
        .into_iter()
        .collect();
    Ok(ProbeOutcome::Valid(ProbeFacts {
        server_date: seen.server_date,
        resources,
        account: body
            .get("user_id")
            .and_then(Value::as_u64)
            .map(|id| format!("gitlab-user-{id}")),
        expires_at: body
            .get("expires_at")
            .and_then(Value::as_str)
            .and_then(parse_date),
    }))
}

/// GitLab's `expires_at`, a date (`2026-01-31`): the token stops working at
/// the start of that day, UTC.
fn parse_date(text: &str) -> Option<Timestamp> {
    let mut d = text.get(..10)?.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    u64::try_from(days_from_civil(y, m, day) * 86_400)
        .ok()
        .map(Timestamp::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiry_date_is_the_start_of_its_day() {
        assert_eq!(
            parse_date("2026-01-01"),
            Some(Timestamp::from_secs(1_767_225_600))
        );
        assert_eq!(parse_date("2026-1-1"), None);
        assert_eq!(parse_date("never"), None);
    }
}
