//! The options of `keyman simulate` and the simulations they ask for.

use super::format::parse_duration;
use keyman::Selection;
use keyman::simulate::{ClientBehaviour, DEFAULT_SEED, Orchestrator, SimConfig};
use std::time::Duration;

/// Options of `keyman simulate`. The defaults are 20 keys (one of them bad), 200
/// workers at one call per second for 24 hours, against GitHub's REST quota of
/// 5 000 calls per key per hour.
#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Keys to publish, including the invalid ones.
    #[arg(long, default_value_t = 20)]
    pub keys: usize,
    /// How many of the keys are bad (the API answers 401).
    #[arg(long, default_value_t = 1)]
    pub invalid: usize,
    /// Workers calling the API.
    #[arg(long, default_value_t = 200)]
    pub workers: usize,
    /// Calls per worker per second while it has a key.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Virtual time to simulate, e.g. 24h, 90m, 3600s, 1h30m, 7d.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub duration: Duration,
    /// Calls each key may make per window.
    #[arg(long, default_value_t = 5000)]
    pub quota: u64,
    /// The quota window of a key (it starts at the key's first call).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub window: Duration,
    /// Give a key up once fewer than this many calls remain (Augur uses 50),
    /// instead of at the first 403.
    #[arg(long)]
    pub floor: Option<u64>,
    /// Seed of every random choice; the same seed gives the same report.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// How often the key states are sampled for the chart.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub sample_every: Duration,
    /// How the workers use their keys: as Augur's do (until a 403), as
    /// keyman-aware workers do (reading the rate-limit headers), or both, side by
    /// side on the same traffic and seed.
    #[arg(long, value_enum, default_value_t = ClientsArg::Augur)]
    pub clients: ClientsArg,
    /// Whose wait policy answers NEW when no key is fresh: keyman's engine, a
    /// model of Augur's orchestrator (the same engine, 5 s added to every wait
    /// hint for the earliest refresh, no extensions), both side by side, or
    /// all three: keyman's, keyman's with its wait hints not staggered, and
    /// Augur's.
    #[arg(long, value_enum, default_value_t = OrchestratorArg::Keyman)]
    pub orchestrator: OrchestratorArg,
    /// Calls per hour the donor of one key makes with it outside keyman.
    #[arg(long, default_value_t = 0)]
    pub donor_calls: u64,
    /// Group the keys into this many accounts; the keys of one account share
    /// one quota.
    #[arg(long)]
    pub accounts: Option<usize>,
    /// Seconds the platform's clock is ahead of ours (negative: behind).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub skew: i64,
    /// A secondary limit: calls of one account in flight at once (more get a
    /// 403 with Retry-After).
    #[arg(long)]
    pub max_concurrent: Option<u64>,
    /// Start the workers one after another over this time (e.g. 1m), as
    /// processes started in turn; by default all start within one call
    /// interval.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub ramp_up: Duration,
    /// How keyman's engine chooses among fresh keys (the model of Augur's
    /// orchestrator always chooses uniformly).
    #[arg(long, value_enum, default_value_t = SelectionArg::Uniform)]
    pub selection: SelectionArg,
    /// Let keyman's engine tell every waiting worker the earliest refresh, as
    /// before wait hints were staggered over the upcoming refreshes.
    #[arg(long)]
    pub no_stagger: bool,
    /// Let the engine probe the simulated API about each key (its
    /// `/rate_limit`, as `keyman serve --probe` does): `--probe` alone runs
    /// without and with probes side by side on the same traffic; `on` only
    /// with.
    #[arg(long, value_enum, default_value_t = ProbeArg::Off, num_args = 0..=1, default_missing_value = "both")]
    pub probe: ProbeArg,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--probe`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeArg {
    /// No probes.
    Off,
    /// Probes.
    On,
    /// Without and with probes, side by side.
    Both,
}

/// `--clients`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientsArg {
    /// Augur's workers: learn only from 403s.
    Augur,
    /// keyman-aware workers: read the rate-limit headers.
    Keyman,
    /// Both, side by side.
    Both,
}

/// `--selection`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectionArg {
    /// Uniformly at random (Augur's; the default).
    Uniform,
    /// Each fresh key in turn.
    RoundRobin,
    /// The key with the most calls left (uniform when nothing is known).
    MostRemaining,
    /// At random, weighted by the calls left (uniform when nothing is known).
    WeightedRemaining,
    /// The fresh key handed out the fewest times since it became fresh.
    LeastAssigned,
}

impl From<SelectionArg> for Selection {
    fn from(s: SelectionArg) -> Self {
        match s {
            SelectionArg::Uniform => Selection::Uniform,
            SelectionArg::RoundRobin => Selection::RoundRobin,
            SelectionArg::MostRemaining => Selection::MostRemaining,
            SelectionArg::WeightedRemaining => Selection::WeightedRemaining,
            SelectionArg::LeastAssigned => Selection::LeastAssigned,
        }
    }
}

/// `--orchestrator`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrchestratorArg {
    /// keyman's engine.
    Keyman,
    /// A model of Augur's orchestrator's wait policy.
    Augur,
    /// Both, side by side.
    Both,
    /// keyman's, keyman's with exact (not staggered) wait hints, and Augur's.
    All,
}

impl SimulateArgs {
    /// The simulation these options describe.
    pub fn config(&self) -> SimConfig {
        SimConfig {
            keys: self.keys,
            invalid: self.invalid,
            workers: self.workers,
            rate: self.rate,
            duration: self.duration,
            quota: self.quota,
            window: self.window,
            floor: self.floor,
            seed: self.seed,
            sample_every: self.sample_every,
            clients: match self.clients {
                ClientsArg::Keyman => ClientBehaviour::Keyman,
                ClientsArg::Augur | ClientsArg::Both => ClientBehaviour::Augur,
            },
            orchestrator: match self.orchestrator {
                OrchestratorArg::Augur => Orchestrator::Augur,
                OrchestratorArg::Keyman | OrchestratorArg::Both | OrchestratorArg::All => {
                    Orchestrator::Keyman
                }
            },
            donor_calls: self.donor_calls,
            accounts: self.accounts,
            skew_seconds: self.skew,
            max_concurrent: self.max_concurrent,
            ramp_up: self.ramp_up,
            selection: self.selection.into(),
            stagger_waits: !self.no_stagger,
            probe: self.probe == ProbeArg::On,
        }
    }

    /// Every simulation these options ask for: one, or the combinations of
    /// `--clients both` and `--orchestrator both` (or `all`) on the same
    /// traffic and seed (orchestrators outer, clients inner).
    pub fn configs(&self) -> Vec<SimConfig> {
        let base = self.config();
        let keyman = (Orchestrator::Keyman, base.stagger_waits);
        let augur = (Orchestrator::Augur, base.stagger_waits);
        let orchestrators = match self.orchestrator {
            OrchestratorArg::Both => vec![keyman, augur],
            OrchestratorArg::All => vec![keyman, (Orchestrator::Keyman, false), augur],
            _ => vec![(base.orchestrator, base.stagger_waits)],
        };
        let clients = match self.clients {
            ClientsArg::Both => vec![ClientBehaviour::Augur, ClientBehaviour::Keyman],
            _ => vec![base.clients],
        };
        let probes = match self.probe {
            ProbeArg::Both => vec![false, true],
            _ => vec![base.probe],
        };
        let mut out = Vec::new();
        for &(orchestrator, stagger_waits) in &orchestrators {
            for &clients in &clients {
                for &probe in &probes {
                    out.push(SimConfig {
                        orchestrator,
                        clients,
                        stagger_waits,
                        probe,
                        ..base.clone()
                    });
                }
            }
        }
        out
    }
}
