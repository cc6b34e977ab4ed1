//! The HTTP prober against a fake GitHub and GitLab API on loopback: what it
//! reads from each answer, how it treats 401, 403/429, 5xx and a dead
//! server, and that nothing it returns shows the token.

#![cfg(feature = "probe")]

mod support;

use keyman::Timestamp;
use keyman::probe::{ProbeOutcome, ProbeRequest, Provider};
use keyman::service::probe::{HttpProber, HttpProberConfig, ProbeError};
use std::time::Duration;
use support::fake_api::{FakeApi, Token};

const KEY: &str = "ghp_probeHttpKey0123456789abcdefghijklmn";

fn prober(api: &str) -> HttpProber {
    HttpProber::new(&HttpProberConfig {
        github_api: api.into(),
        gitlab_api: api.into(),
        timeout: Duration::from_secs(2),
        retry_backoff: Duration::from_millis(20),
        ..HttpProberConfig::default()
    })
    .expect("a prober")
}

fn request(provider: Provider, want_account: bool) -> ProbeRequest {
    ProbeRequest {
        id: 1,
        provider,
        key: KEY.into(),
        platforms: vec![("github_rest".into(), "core".into())],
        want_account,
    }
}

#[tokio::test]
async fn github_quotas_date_account_and_expiry_are_read() {
    let api = FakeApi::start().await;
    let now = api.api_now();
    let mut token = Token::good(now);
    token.set_quota(4321, now + 1000);
    token.login = Some("octocat".into());
    token.expiration = Some("2030-01-01 00:00:00 UTC".into());
    api.add(KEY, token);
    let outcome = prober(&api.url())
        .probe_detailed(&request(Provider::GitHub, true))
        .await
        .unwrap();
    let ProbeOutcome::Valid(facts) = outcome else {
        panic!("{outcome:?}");
    };
    let core = facts
        .resources
        .iter()
        .find(|r| r.resource == "core")
        .unwrap();
    assert_eq!(core.remaining, Some(4321));
    assert_eq!(core.limit, Some(5000));
    assert_eq!(core.reset, Some(Timestamp::from_secs(now + 1000)));
    assert_eq!(facts.resources.len(), 3);
    assert_eq!(facts.account.as_deref(), Some("octocat"));
    assert_eq!(facts.expires_at, Some(Timestamp::from_secs(1_893_456_000)));
    let date = facts.server_date.unwrap().as_secs();
    assert!(date.abs_diff(now) <= 1, "{date} vs {now}");
    let seen = api.requests("/rate_limit");
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0]
            .user_agent
            .as_deref()
            .unwrap()
            .starts_with("keyman/")
    );
    assert_eq!(api.requests("/user").len(), 1);
    // Asked again without wanting the account: no /user call.
    prober(&api.url())
        .probe_detailed(&request(Provider::GitHub, false))
        .await
        .unwrap();
    assert_eq!(api.requests("/user").len(), 1);
}

#[tokio::test]
async fn a_revoked_token_is_unauthorized_and_a_throttled_probe_says_for_how_long() {
    let api = FakeApi::start().await;
    let mut token = Token::good(api.api_now());
    token.revoked = true;
    api.add(KEY, token);
    let p = prober(&api.url());
    assert_eq!(
        p.probe_detailed(&request(Provider::GitHub, true)).await,
        Ok(ProbeOutcome::Unauthorized)
    );
    assert_eq!(
        p.probe_detailed(&request(Provider::GitLab, false)).await,
        Ok(ProbeOutcome::Unauthorized)
    );
    api.state.lock().unwrap().throttle = Some((403, Some(7), 1));
    assert_eq!(
        p.probe_detailed(&request(Provider::GitHub, false)).await,
        Ok(ProbeOutcome::Throttled {
            retry_after: Some(Duration::from_secs(7))
        })
    );
    api.state.lock().unwrap().throttle = Some((429, None, 1));
    assert_eq!(
        p.probe_detailed(&request(Provider::GitLab, false)).await,
        Ok(ProbeOutcome::Throttled { retry_after: None })
    );
}

#[tokio::test]
async fn gitlab_validity_expiry_account_and_rate_limit_headers_are_read() {
    let api = FakeApi::start().await;
    let now = api.api_now();
    let mut token = Token::good(now);
    token.set_quota(600, now + 60);
    token.gitlab_expires_at = Some("2030-01-01".into());
    token.gitlab_user = Some(42);
    api.add(KEY, token);
    let outcome = prober(&api.url())
        .probe_detailed(&request(Provider::GitLab, true))
        .await
        .unwrap();
    let ProbeOutcome::Valid(facts) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(facts.resources.len(), 1);
    assert_eq!(facts.resources[0].resource, "rest");
    assert_eq!(facts.resources[0].remaining, Some(600));
    assert_eq!(
        facts.resources[0].reset,
        Some(Timestamp::from_secs(now + 60))
    );
    assert_eq!(facts.account.as_deref(), Some("gitlab-user-42"));
    assert_eq!(facts.expires_at, Some(Timestamp::from_secs(1_893_456_000)));
}

#[tokio::test]
async fn server_errors_are_retried_and_then_fail_without_showing_the_key() {
    let api = FakeApi::start().await;
    api.add(KEY, Token::good(api.api_now()));
    api.state.lock().unwrap().throttle = Some((502, None, 3));
    let p = prober(&api.url());
    let result = p.probe_detailed(&request(Provider::GitHub, false)).await;
    assert_eq!(result, Err(ProbeError::Status(502)));
    assert_eq!(
        api.requests("/rate_limit").len(),
        3,
        "the first try and two retries"
    );
    // A 502 twice, then the answer: the retries get it.
    api.state.lock().unwrap().throttle = Some((503, None, 2));
    let result = p.probe_detailed(&request(Provider::GitHub, false)).await;
    assert!(matches!(result, Ok(ProbeOutcome::Valid(_))), "{result:?}");

    // Nobody listening: a connection error, retried, whose text and debug
    // form show neither the key nor the header.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead = prober(&format!("http://127.0.0.1:{port}"));
    let error = dead
        .probe_detailed(&request(Provider::GitHub, true))
        .await
        .unwrap_err();
    assert_eq!(error, ProbeError::Connect);
    for text in [error.to_string(), format!("{error:?}")] {
        assert!(!text.contains(KEY) && !text.contains("Bearer"), "{text}");
    }
    assert!(!format!("{:?}", request(Provider::GitHub, true)).contains(KEY));
}

#[test]
fn plain_http_to_another_host_is_refused() {
    let refused = HttpProber::new(&HttpProberConfig {
        github_api: "http://api.github.com".into(),
        ..HttpProberConfig::default()
    });
    let error = refused.unwrap_err().to_string();
    assert!(error.contains("must be https"), "{error}");
}
