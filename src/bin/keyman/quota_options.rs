//! `keyman serve`'s quota options: floors, the choice strategy of each
//! platform, and the quota leases (calls lent with a key), read into the
//! engine's [`QuotaConfig`].

use clap::Args;
use keyman::quota::{DEFAULT_LEASE_TTL, DEFAULT_MAX_LEASES, QuotaConfig};
use keyman::{KeyError, Selection};
use std::time::Duration;

/// The names `--selection` knows, for its help and its errors.
const STRATEGIES: &str = "uniform, round-robin, most-remaining, weighted, least-assigned";

#[derive(Args, Debug, Clone)]
pub(crate) struct QuotaOptions {
    /// Calls kept in reserve (for the people who lend their keys): a key whose
    /// account has this many remaining calls or fewer (as REPORTs say) is
    /// withheld until its reset, like an expired key, and no quota lease
    /// takes it below. `PLATFORM=N` for every account of a platform,
    /// `PLATFORM:ACCOUNT=N` for one account named by PUBLISH's `account`
    /// (over the platform's). Repeatable. No floor by default.
    #[arg(long = "floor", value_name = "PLATFORM[:ACCOUNT]=N", value_parser = parse_floor)]
    pub(crate) floors: Vec<Floor>,
    /// How a fresh key is chosen: uniform (at random, as Augur's
    /// orchestrator; the default), round-robin, most-remaining (the key
    /// whose account has the most calls left above its floor), weighted
    /// (at random, weighted by the calls left above the floor) or
    /// least-assigned (the key handed out the fewest times since it was
    /// last fresh again).
    /// `STRATEGY` for every platform, `PLATFORM=STRATEGY` for one.
    /// Repeatable. While nothing is known of a platform's quotas,
    /// most-remaining and weighted draw uniformly.
    #[arg(long = "selection", value_name = "[PLATFORM=]STRATEGY", value_parser = parse_selection)]
    pub(crate) selections: Vec<SelectionOption>,
    /// The most quota leases (NEW with `lease`: calls lent with a key)
    /// outstanding at once per account; 0 switches quota leases off (such a
    /// NEW then gets a key without a lease).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_LEASES)]
    pub(crate) max_leases: usize,
    /// Seconds a quota lease (calls lent with a key, NEW with `lease`) lasts
    /// unless a REPORT ends it; after it, the lease counts as fully used.
    /// Not the standby's leadership lease (that is --lease-ttl).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = DEFAULT_LEASE_TTL.as_secs_f64(),
        value_parser = parse_lease_duration
    )]
    pub(crate) quota_lease_duration: f64,
}

/// One `--floor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Floor {
    platform: String,
    account: Option<String>,
    calls: u64,
}

/// One `--selection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SelectionOption {
    platform: Option<String>,
    selection: Selection,
}

fn parse_floor(text: &str) -> Result<Floor, String> {
    let (target, calls) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("{text:?} is not PLATFORM=N or PLATFORM:ACCOUNT=N"))?;
    let calls = calls.trim().parse::<u64>().map_err(|_| {
        format!("the floor of {target:?} must be a whole number of calls, 0 or more, not {calls:?}")
    })?;
    let (platform, account) = match target.split_once(':') {
        Some((platform, account)) => (platform, Some(account)),
        None => (target, None),
    };
    if platform.is_empty() {
        return Err(format!("{text:?} names no platform"));
    }
    if account.is_some_and(str::is_empty) {
        return Err(format!("{text:?} names no account after the ':'"));
    }
    Ok(Floor {
        platform: platform.to_owned(),
        account: account.map(str::to_owned),
        calls,
    })
}

fn strategy(name: &str) -> Result<Selection, String> {
    match name.trim() {
        "uniform" => Ok(Selection::Uniform),
        "round-robin" => Ok(Selection::RoundRobin),
        "most-remaining" => Ok(Selection::MostRemaining),
        "weighted" | "weighted-remaining" => Ok(Selection::WeightedRemaining),
        "least-assigned" => Ok(Selection::LeastAssigned),
        other => Err(format!(
            "unknown strategy {other:?}; the strategies are {STRATEGIES}"
        )),
    }
}

fn parse_selection(text: &str) -> Result<SelectionOption, String> {
    match text.rsplit_once('=') {
        Some(("", _)) => Err(format!("{text:?} names no platform before the '='")),
        Some((platform, name)) => Ok(SelectionOption {
            platform: Some(platform.to_owned()),
            selection: strategy(name)?,
        }),
        None => Ok(SelectionOption {
            platform: None,
            selection: strategy(text)?,
        }),
    }
}

fn parse_lease_duration(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(secs) if secs >= 1.0 && Duration::try_from_secs_f64(secs).is_ok() => Ok(secs),
        _ => Err(format!("{text:?} is not a number of seconds, 1 or more")),
    }
}

impl QuotaOptions {
    /// The engine's default strategy and quota settings these options give;
    /// an option given twice for the same platform (or account) is a usage
    /// error.
    pub(crate) fn config(&self) -> Result<(Selection, QuotaConfig), KeyError> {
        let twice = |what: String| KeyError::InvalidArgument(format!("{what} is given twice"));
        let mut config = QuotaConfig {
            max_leases: self.max_leases,
            lease_ttl: Duration::try_from_secs_f64(self.quota_lease_duration)
                .unwrap_or(DEFAULT_LEASE_TTL),
            ..QuotaConfig::default()
        };
        for floor in &self.floors {
            let taken = match &floor.account {
                None => config
                    .floors
                    .insert(floor.platform.clone(), floor.calls)
                    .is_some(),
                Some(account) => config
                    .account_floors
                    .entry(floor.platform.clone())
                    .or_default()
                    .insert(account.clone(), floor.calls)
                    .is_some(),
            };
            if taken {
                let target = match &floor.account {
                    None => floor.platform.clone(),
                    Some(account) => format!("{}:{account}", floor.platform),
                };
                return Err(twice(format!("--floor {target}")));
            }
        }
        let mut default = None;
        for option in &self.selections {
            let taken = match &option.platform {
                None => default.replace(option.selection).is_some(),
                Some(platform) => config
                    .selections
                    .insert(platform.clone(), option.selection)
                    .is_some(),
            };
            if taken {
                let target = option
                    .platform
                    .as_deref()
                    .unwrap_or("STRATEGY (for every platform)");
                return Err(twice(format!("--selection {target}")));
            }
        }
        Ok((default.unwrap_or_default(), config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(floors: &[&str], selections: &[&str]) -> Result<QuotaOptions, String> {
        Ok(QuotaOptions {
            floors: floors
                .iter()
                .map(|f| parse_floor(f))
                .collect::<Result<_, _>>()?,
            selections: selections
                .iter()
                .map(|s| parse_selection(s))
                .collect::<Result<_, _>>()?,
            max_leases: 7,
            quota_lease_duration: 30.0,
        })
    }

    #[test]
    fn floors_strategies_and_leases_fill_the_quota_config() {
        let o = options(
            &["github_rest=100", "github_rest:alice=500", "gitlab_rest=0"],
            &[
                "most-remaining",
                "github_search=round-robin",
                "gitlab_rest=weighted",
            ],
        )
        .unwrap();
        let (default, config) = o.config().unwrap();
        assert_eq!(default, Selection::MostRemaining);
        assert_eq!(config.floors["github_rest"], 100);
        assert_eq!(config.floors["gitlab_rest"], 0);
        assert_eq!(config.account_floors["github_rest"]["alice"], 500);
        assert_eq!(config.selections["github_search"], Selection::RoundRobin);
        assert_eq!(
            config.selections["gitlab_rest"],
            Selection::WeightedRemaining
        );
        assert_eq!(config.max_leases, 7);
        assert_eq!(config.lease_ttl, Duration::from_secs(30));
        // Nothing given: uniform, no floors.
        let (default, config) = options(&[], &[]).unwrap().config().unwrap();
        assert_eq!(default, Selection::Uniform);
        assert!(config.floors.is_empty() && config.selections.is_empty());
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        for (text, says) in [
            ("github_rest", "is not PLATFORM=N"),
            ("github_rest=lots", "whole number of calls"),
            ("github_rest=-1", "whole number of calls"),
            ("=5", "names no platform"),
            ("github_rest:=5", "names no account"),
        ] {
            let err = parse_floor(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
        for (text, says) in [
            ("fastest", "unknown strategy \"fastest\""),
            ("github_rest=fastest", "the strategies are uniform"),
            ("=uniform", "names no platform"),
        ] {
            let err = parse_selection(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
        for text in ["0", "0.5", "-3", "soon", "1e30"] {
            assert!(parse_lease_duration(text).is_err(), "{text}");
        }
        let twice = |floors: &[&str], selections: &[&str]| {
            options(floors, selections)
                .unwrap()
                .config()
                .unwrap_err()
                .to_string()
        };
        assert!(twice(&["p=1", "p=2"], &[]).contains("--floor p is given twice"));
        assert!(twice(&["p:a=1", "p:a=2"], &[]).contains("--floor p:a is given twice"));
        assert!(twice(&[], &["uniform", "weighted"]).contains("given twice"));
        assert!(twice(&[], &["p=uniform", "p=weighted"]).contains("--selection p is given twice"));
    }
}
