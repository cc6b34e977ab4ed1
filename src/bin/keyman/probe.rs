//! `keyman serve --probe`: the options of the probes and what they build (the
//! engine's probe settings and the HTTP prober).

use clap::Args;
use keyman::KeyError;
use keyman::probe::{ProbeConfig, Provider, Target};
use keyman::service::probe::{
    DEFAULT_GITHUB_API, DEFAULT_GITLAB_API, HttpProber, HttpProberConfig, Prober,
};
use std::sync::Arc;
use std::time::Duration;

/// How `serve` asks the platforms about its keys.
#[derive(Args, Debug, Clone)]
pub(crate) struct ProbeOptions {
    /// Ask GitHub and GitLab about each key: GitHub's `GET /rate_limit` (which
    /// does not count against the rate limit) and `GET /user` once, GitLab's
    /// `GET /api/v4/personal_access_tokens/self`. A new key is handed out once
    /// the platform has answered (a revoked one never), a key a worker
    /// INVALIDATEs is invalid only if the platform says 401, and a key drained
    /// or at its floor is withheld until its reset. Off by default.
    #[arg(long)]
    pub(crate) probe: bool,
    /// GitHub's API; for GitHub Enterprise Server `https://HOST/api/v3`.
    #[arg(long, value_name = "URL", default_value = DEFAULT_GITHUB_API)]
    pub(crate) github_api_url: String,
    /// GitLab's base URL (`/api/v4/...` is added).
    #[arg(long, value_name = "URL", default_value = DEFAULT_GITLAB_API)]
    pub(crate) gitlab_api_url: String,
    /// The most probes per second, over all keys.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub(crate) probe_rate: u32,
    /// Seconds between two probes of a key handed out since its last probe
    /// (other keys: every 15 minutes; never more often than every 5 s).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub(crate) probe_interval: u64,
    /// Warn (log and STATUS `tokens_expiring`) this many days before a token
    /// expires.
    #[arg(long, value_name = "DAYS", default_value_t = 7)]
    pub(crate) token_expiry_warning_days: u64,
    /// Probe another platform too: `PLATFORM=PROVIDER:RESOURCE`, the provider
    /// `github` or `gitlab`, the resource the platform's quota is (`core`,
    /// `graphql`, `search`, … for GitHub; `rest` for GitLab). Repeatable. By
    /// default `github_rest`, `github_graphql`, `github_search` and
    /// `gitlab_rest` are probed.
    #[arg(long = "probe-platform", value_name = "PLATFORM=PROVIDER:RESOURCE")]
    pub(crate) probe_platforms: Vec<String>,
}

fn invalid(message: String) -> KeyError {
    KeyError::InvalidArgument(message)
}

/// `PLATFORM=PROVIDER:RESOURCE`.
fn target(text: &str) -> Result<(String, Target), KeyError> {
    let form = || {
        invalid(format!(
            "--probe-platform {text:?}: expected PLATFORM=PROVIDER:RESOURCE, e.g. ghes_rest=github:core"
        ))
    };
    let (platform, rest) = text.split_once('=').ok_or_else(form)?;
    let (provider, resource) = rest.split_once(':').ok_or_else(form)?;
    let provider = Provider::from_name(provider).ok_or_else(|| {
        invalid(format!(
            "--probe-platform {text:?}: unknown provider {provider:?} (github or gitlab)"
        ))
    })?;
    if platform.is_empty() || resource.is_empty() {
        return Err(form());
    }
    Ok((platform.to_string(), Target::new(provider, resource)))
}

impl ProbeOptions {
    /// The engine's probe settings; `None` without `--probe`.
    pub(crate) fn config(&self) -> Result<Option<ProbeConfig>, KeyError> {
        if !self.probe {
            return Ok(None);
        }
        if self.probe_rate == 0 {
            return Err(invalid("--probe-rate must be 1 or more".into()));
        }
        let mut config = ProbeConfig {
            max_per_second: self.probe_rate,
            in_use_interval: Duration::from_secs(self.probe_interval.max(1)),
            expiry_warning: Duration::from_secs(
                self.token_expiry_warning_days.saturating_mul(86_400),
            ),
            ..ProbeConfig::default()
        };
        for text in &self.probe_platforms {
            let (platform, target) = target(text)?;
            config.targets.insert(platform, target);
        }
        Ok(Some(config))
    }

    /// The HTTP prober; `None` without `--probe`.
    pub(crate) fn prober(&self) -> Result<Option<Arc<dyn Prober>>, KeyError> {
        if !self.probe {
            return Ok(None);
        }
        let prober = HttpProber::new(&HttpProberConfig {
            github_api: self.github_api_url.clone(),
            gitlab_api: self.gitlab_api_url.clone(),
            ..HttpProberConfig::default()
        })
        .map_err(|e| invalid(e.to_string()))?;
        Ok(Some(Arc::new(prober)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_platform_mapping_is_read_and_nonsense_is_refused() {
        let (platform, t) = target("ghes_rest=github:core").unwrap();
        assert_eq!(platform, "ghes_rest");
        assert_eq!(t, Target::new(Provider::GitHub, "core"));
        assert!(target("ghes_rest=bitbucket:core").is_err());
        assert!(target("ghes_rest").is_err());
        assert!(target("=github:core").is_err());
        assert!(target("x=github:").is_err());
    }
}
