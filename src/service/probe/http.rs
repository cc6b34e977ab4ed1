//! [`HttpProber`]: the probes over HTTPS, with reqwest.

use super::{Prober, github, gitlab};
use crate::mask::Masked;
use crate::probe::{ProbeOutcome, ProbeRequest, Provider};
use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Client, StatusCode, Url};
use std::time::Duration;

/// GitHub's API (`--github-api-url`); for GitHub Enterprise Server use
/// `https://HOST/api/v3`.
pub const DEFAULT_GITHUB_API: &str = "https://api.github.com";
/// GitLab's (`--gitlab-api-url`): the instance's root; `/api/v4/…` is added.
pub const DEFAULT_GITLAB_API: &str = "https://gitlab.com";

/// The `User-Agent` of every probe: keyman and its version.
pub fn user_agent() -> String {
    format!(
        "keyman/{} (key orchestrator probe)",
        env!("CARGO_PKG_VERSION")
    )
}

/// How an [`HttpProber`] calls the platforms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProberConfig {
    /// GitHub's API base ([`DEFAULT_GITHUB_API`]).
    pub github_api: String,
    /// GitLab's base ([`DEFAULT_GITLAB_API`]).
    pub gitlab_api: String,
    /// The longest wait for a connection. 5 s by default.
    pub connect_timeout: Duration,
    /// The longest one HTTP call may take, all included. 8 s by default.
    pub timeout: Duration,
    /// Attempts after the first when the network fails or the platform
    /// answers 5xx. 2 by default.
    pub retries: u32,
    /// The wait before the first retry, doubled at each. 500 ms by default.
    pub retry_backoff: Duration,
}

impl Default for HttpProberConfig {
    fn default() -> Self {
        Self {
            github_api: DEFAULT_GITHUB_API.into(),
            gitlab_api: DEFAULT_GITLAB_API.into(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(8),
            retries: 2,
            retry_backoff: Duration::from_millis(500),
        }
    }
}

/// Why an [`HttpProber`] cannot be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeSetupError {
    /// An API base URL does not parse.
    #[error("the {which} API URL {url:?} is not a URL: {reason}")]
    InvalidUrl {
        /// `github` or `gitlab`.
        which: &'static str,
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An API base URL is plain `http` to a host that is not loopback: tokens
    /// would cross the network in clear text.
    #[error("the {which} API URL {url:?} must be https (plain http only to a loopback address)")]
    NotHttps {
        /// `github` or `gitlab`.
        which: &'static str,
        /// The URL given.
        url: String,
    },
    /// The HTTP client could not be built (its TLS setup failed).
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}

/// Why one call of a probe failed. Its text never contains the token, nor the
/// request's headers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// No connection could be made (refused, DNS, TLS, proxy).
    #[error("cannot connect to the API")]
    Connect,
    /// The call took longer than its timeout.
    #[error("the API did not answer in time")]
    Timeout,
    /// The platform answered with a status that says nothing of the token.
    #[error("the API answered HTTP {0}")]
    Status(u16),
    /// The answer's body could not be read.
    #[error("the API's answer could not be read: {0}")]
    Body(String),
    /// Anything else the client reported.
    #[error("the call failed: {0}")]
    Other(String),
}

impl ProbeError {
    /// Our error for a client error, without its URL or anything sent.
    fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            ProbeError::Timeout
        } else if e.is_connect() {
            ProbeError::Connect
        } else if e.is_body() || e.is_decode() {
            ProbeError::Body("cut short or malformed".into())
        } else {
            ProbeError::Other(e.without_url().to_string())
        }
    }
}

/// One answer, read whole: status, headers, body.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Vec<u8>,
}

/// The largest body read from a probe's answer.
const MAX_BODY: usize = 256 * 1024;

/// Asks GitHub and GitLab about tokens over HTTPS. See the [module
/// docs](super).
#[derive(Debug, Clone)]
pub struct HttpProber {
    client: Client,
    github: Url,
    gitlab: Url,
    retries: u32,
    retry_backoff: Duration,
}

/// Parses and checks one base URL: https, or http to loopback only.
fn base_url(which: &'static str, text: &str) -> Result<Url, ProbeSetupError> {
    let trimmed = text.trim_end_matches('/');
    let url = Url::parse(trimmed).map_err(|e| ProbeSetupError::InvalidUrl {
        which,
        url: text.into(),
        reason: e.to_string(),
    })?;
    let loopback = match url.host_str() {
        Some(h) if h.eq_ignore_ascii_case("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err(ProbeSetupError::NotHttps {
            which,
            url: text.into(),
        }),
        other => Err(ProbeSetupError::InvalidUrl {
            which,
            url: text.into(),
            reason: format!("scheme {other} is not http or https"),
        }),
    }
}

impl HttpProber {
    /// A prober with `config`. Installs rustls' ring provider as the process
    /// default if none is installed yet.
    pub fn new(config: &HttpProberConfig) -> Result<Self, ProbeSetupError> {
        let github = base_url("github", &config.github_api)?;
        let gitlab = base_url("gitlab", &config.gitlab_api)?;
        // Another provider installed first is used as it is.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::builder()
            .user_agent(user_agent())
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            // A redirect could carry the token elsewhere: none are followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ProbeSetupError::Client(e.without_url().to_string()))?;
        Ok(Self {
            client,
            github,
            gitlab,
            retries: config.retries,
            retry_backoff: config.retry_backoff,
        })
    }

    /// `base` with `path` added (the base's own path kept, as GHES's `/api/v3`).
    fn url(base: &Url, path: &str) -> Url {
        let mut url = base.clone();
        let joined = format!("{}{path}", base.path().trim_end_matches('/'));
        url.set_path(&joined);
        url
    }

    /// `GET url` with `key` as a bearer token, retried after network errors
    /// and 5xx answers.
    pub(super) async fn get(&self, url: Url, key: &str) -> Result<Answer, ProbeError> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| ProbeError::Other("the key cannot be sent in a header".into()))?;
        auth.set_sensitive(true);
        let mut attempt = 0u32;
        loop {
            let result = self.get_once(url.clone(), auth.clone()).await;
            let retry = match &result {
                Ok(a) => a.status.is_server_error(),
                Err(ProbeError::Connect | ProbeError::Timeout | ProbeError::Other(_)) => true,
                Err(_) => false,
            };
            if !retry || attempt >= self.retries {
                return match result {
                    Ok(a) if a.status.is_server_error() => {
                        Err(ProbeError::Status(a.status.as_u16()))
                    }
                    other => other,
                };
            }
            let wait = self.retry_backoff.saturating_mul(1u32 << attempt.min(16));
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn get_once(&self, url: Url, auth: HeaderValue) -> Result<Answer, ProbeError> {
        let response = self
            .client
            .get(url)
            .header(AUTHORIZATION, auth)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(ProbeError::from_reqwest)?;
        let status = response.status();
        let headers = response.headers().clone();
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY as u64)
        {
            return Err(ProbeError::Body("too large".into()));
        }
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response.chunk().await.map_err(ProbeError::from_reqwest)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(ProbeError::Body("too large".into()));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// GitHub's `{api}/rate_limit`.
    pub(super) fn github_url(&self, path: &str) -> Url {
        Self::url(&self.github, path)
    }

    /// GitLab's `{api}{path}`.
    pub(super) fn gitlab_url(&self, path: &str) -> Url {
        Self::url(&self.gitlab, path)
    }
}

impl HttpProber {
    /// One probe, with the reason when it got no useful answer (the
    /// [`Prober`] answers [`ProbeOutcome::Failed`] then, and logs the reason
    /// at debug level with the key masked).
    pub async fn probe_detailed(&self, request: &ProbeRequest) -> Result<ProbeOutcome, ProbeError> {
        match request.provider {
            Provider::GitHub => github::probe(self, request).await,
            Provider::GitLab => gitlab::probe(self, request).await,
        }
    }
}

#[async_trait]
impl Prober for HttpProber {
    async fn probe(&self, request: &ProbeRequest) -> ProbeOutcome {
        match self.probe_detailed(request).await {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::debug!(
                    provider = %request.provider,
                    key = %Masked(&request.key),
                    %error,
                    "probe failed"
                );
                ProbeOutcome::Failed
            }
        }
    }
}

/// What a 403 or 429 to a probe means: how long to wait, from `Retry-After`
/// (seconds or a date) or, with no calls remaining, the reset time.
pub(super) fn throttled(answer: &Answer) -> ProbeOutcome {
    let seen = crate::ratelimit::RateLimit::from_header_map(&answer.headers);
    let retry_after = seen.retry_after.or_else(|| {
        let date = seen.server_date?;
        let at = seen
            .retry_at
            .or(seen.reset.filter(|_| seen.remaining == Some(0)))?;
        Some(at.saturating_since(date))
    });
    ProbeOutcome::Throttled { retry_after }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_go_over_https_or_to_loopback_only() {
        assert!(base_url("github", "https://api.github.com").is_ok());
        assert!(base_url("github", "https://ghe.example.com/api/v3/").is_ok());
        assert!(base_url("github", "http://127.0.0.1:8080").is_ok());
        assert!(base_url("github", "http://[::1]:8080").is_ok());
        assert!(base_url("github", "http://localhost:8080").is_ok());
        assert!(matches!(
            base_url("github", "http://api.github.com"),
            Err(ProbeSetupError::NotHttps { .. })
        ));
        assert!(matches!(
            base_url("gitlab", "ftp://gitlab.com"),
            Err(ProbeSetupError::InvalidUrl { .. })
        ));
        assert!(matches!(
            base_url("gitlab", "not a url"),
            Err(ProbeSetupError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn paths_are_added_to_the_base_path() {
        let ghes = base_url("github", "https://ghe.example.com/api/v3/").unwrap();
        assert_eq!(
            HttpProber::url(&ghes, "/rate_limit").as_str(),
            "https://ghe.example.com/api/v3/rate_limit"
        );
        let gh = base_url("github", "https://api.github.com").unwrap();
        assert_eq!(
            HttpProber::url(&gh, "/user").as_str(),
            "https://api.github.com/user"
        );
    }

    #[test]
    fn the_user_agent_names_keyman_and_its_version() {
        assert!(user_agent().starts_with(&format!("keyman/{}", env!("CARGO_PKG_VERSION"))));
    }
}
