//! GitHub's side of a probe: `GET {api}/rate_limit` (which does not count
//! against the primary rate limit) for every resource's quota and the token's
//! expiry (`github-authentication-token-expiration`), and `GET {api}/user` for
//! the account, once per key.

use super::http::{Answer, HttpProber, ProbeError, throttled};
use crate::probe::{ProbeFacts, ProbeOutcome, ProbeRequest, ResourceQuota};
use crate::ratelimit::RateLimit;
use crate::time::Timestamp;
use serde_json::Value;

pub(super) async fn probe(
    prober: &HttpProber,
    request: &ProbeRequest,
) -> Result<ProbeOutcome, ProbeError> {
    let answer = prober
        .get(prober.github_url("/rate_limit"), &request.key)
        .await?;
    match answer.status.as_u16() {
        200 => {}
        401 => return Ok(ProbeOutcome::Unauthorized),
        403 | 429 => return Ok(throttled(&answer)),
        other => return Err(ProbeError::Status(other)),
    }
    let mut facts = rate_limit(&answer)?;
    if request.want_account {
        // The account is a nicety: without it the key is its own account.
        if let Ok(user) = prober.get(prober.github_url("/user"), &request.key).await
            && user.status.as_u16() == 200
        {
            facts.account = login(&user.body);
        }
    }
    Ok(ProbeOutcome::Valid(facts))
}

/// The facts of a `/rate_limit` answer.
fn rate_limit(answer: &Answer) -> Result<ProbeFacts, ProbeError> {
    let body: Value =
        serde_json::from_slice(&answer.body).map_err(|_| ProbeError::Body("not JSON".into()))?;
    let Some(resources) = body.get("resources").and_then(Value::as_object) else {
        return Err(ProbeError::Body("no resources".into()));
    };
    let resources = resources
        .iter()
        .filter_map(|(name, r)| {
            let n = |f: &str| r.get(f).and_then(Value::as_u64);
            Some(ResourceQuota {
                resource: name.chars().take(64).collect(),
                limit: n("limit"),
                remaining: n("remaining"),
                reset: n("reset").map(Timestamp::from_secs),
            })
            .filter(|q| q.remaining.is_some())
        })
        .collect();
    let seen = RateLimit::from_header_map(&answer.headers);
    let expires_at = answer
        .headers
        .get("github-authentication-token-expiration")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_expiration);
    Ok(ProbeFacts {
        server_date: seen.server_date,
        resources,
        account: None,
        expires_at,
    })
}

/// The `login` of a `/user` answer.
fn login(body: &[u8]) -> Option<String> {
    let body: Value = serde_json::from_slice(body).ok()?;
    let login = body.get("login")?.as_str()?;
    (!login.is_empty() && login.len() <= 100).then(|| login.to_string())
}

/// GitHub's token expiry, `2026-01-31 12:00:00 UTC` (or with a `+hhmm`
/// offset instead of `UTC`).
pub(super) fn parse_expiration(text: &str) -> Option<Timestamp> {
    let mut parts = text.split_whitespace();
    let (date, time, zone) = (parts.next()?, parts.next()?, parts.next().unwrap_or("UTC"));
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next().flatten().unwrap_or(0));
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let offset = match zone {
        "UTC" | "GMT" | "Z" => 0,
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let h: i64 = z[1..3].parse().ok()?;
            let mi: i64 = z[3..5].parse().ok()?;
            sign * (h * 3600 + mi * 60)
        }
        _ => return None,
    };
    let secs = days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss - offset;
    u64::try_from(secs).ok().map(Timestamp::from_secs)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub(super) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_expiry_is_read_in_utc_and_with_an_offset() {
        assert_eq!(
            parse_expiration("2026-01-01 00:00:00 UTC"),
            Some(Timestamp::from_secs(1_767_225_600))
        );
        assert_eq!(
            parse_expiration("2026-01-01 02:00:00 +0200"),
            Some(Timestamp::from_secs(1_767_225_600))
        );
        assert_eq!(
            parse_expiration("2000-02-29 12:30:15 UTC"),
            Some(Timestamp::from_secs(951_827_415))
        );
        assert_eq!(parse_expiration("soon"), None);
        assert_eq!(parse_expiration("2026-13-01 00:00:00 UTC"), None);
    }

    #[test]
    fn a_login_is_read_and_nonsense_is_not() {
        assert_eq!(
            login(br#"{"login": "octocat", "id": 1}"#).as_deref(),
            Some("octocat")
        );
        assert_eq!(login(br#"{"id": 1}"#), None);
        assert_eq!(login(b"<html>"), None);
    }
}
