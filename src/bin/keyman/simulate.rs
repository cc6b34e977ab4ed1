//! `keyman simulate`: runs the orchestrator's engine in virtual time against a
//! simulated GitHub-like API and prints what keyman does for the throughput of a
//! fleet of Augur-like workers. Needs no server.

use format::{format_duration, hours, parse_duration, percent, sparkline, thousands};
use keyman::simulate::{self, ConfigError, DEFAULT_SEED, Report, SimConfig};
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

mod format;

/// The widest a chart line gets, in characters.
const CHART_WIDTH: usize = 72;

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
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
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
        }
    }
}

/// Runs `keyman simulate`: prints the report (a table, or JSON with `--json`) on
/// standard output and a progress bar on standard error. Exits with 2 when the
/// options cannot be simulated.
pub fn run(args: SimulateArgs) -> ExitCode {
    let config = args.config();
    if let Err(e) = config.validate() {
        eprintln!("keyman simulate: {e}");
        return ExitCode::from(2);
    }
    let bar = indicatif::ProgressBar::new(1000);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "simulating {bar:40.cyan/blue} {percent:>3}% of the virtual time",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let outcome = simulate::run(&config, &mut |done| {
        bar.set_position((done * 1000.0) as u64);
    });
    let wall = started.elapsed();
    bar.finish_and_clear();
    let report = match outcome {
        Ok(report) => report,
        Err(e) => return config_error(e),
    };
    let text = if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => text + "\n",
            Err(e) => {
                eprintln!("keyman simulate: cannot write the report as JSON: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        table(&config, &report, wall)
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (e.g. `| head`): nothing left to tell anyone.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyman simulate: cannot write the report: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config_error(e: ConfigError) -> ExitCode {
    eprintln!("keyman simulate: {e}");
    ExitCode::from(2)
}

/// The report as a table for people.
fn table(config: &SimConfig, report: &Report, wall: Duration) -> String {
    let mut out = String::new();
    let floor = match config.floor {
        Some(f) => format!("floor {f}"),
        None => "no floor".to_string(),
    };
    out.push_str(&format!(
        "keyman simulate: {} keys ({} invalid), {} workers at {} call/s each, {} of virtual time\n\
         API quota {} calls per key per {}, {floor}, seed {}\n\
         simulated in {:.2} s\n\n",
        config.keys,
        config.invalid,
        config.workers,
        config.rate,
        format_duration(config.duration),
        thousands(config.quota),
        format_duration(config.window),
        config.seed,
        wall.as_secs_f64(),
    ));
    let rows: Vec<(&str, String)> = vec![
        ("calls served (2xx)", thousands(report.calls_served)),
        ("rate limited (403)", thousands(report.rate_limited)),
        ("unauthorized (401)", thousands(report.unauthorized)),
        ("calls wanted (demand)", thousands(report.demand)),
        ("calls the quotas allow", thousands(report.capacity)),
        ("key utilization", percent(report.utilization)),
        (
            "waiting for a key, all workers",
            hours(report.waiting_seconds_total),
        ),
        (
            "waiting for a key, per worker",
            format!(
                "{} ({} of its time)",
                hours(report.waiting_seconds_per_worker),
                percent(report.waiting_share)
            ),
        ),
        ("keys handed out (NEW)", thousands(report.keys_handed_out)),
        ("wait hints (NEW)", thousands(report.wait_replies)),
        ("errors (NEW)", thousands(report.error_replies)),
        ("keys expired (EXPIRE)", thousands(report.keys_expired)),
        (
            "keys invalidated (INVALIDATE)",
            thousands(report.keys_invalidated),
        ),
        (
            "invalid keys handed out again",
            thousands(report.invalid_handouts_after_invalidation),
        ),
        (
            "calls served over quota",
            thousands(report.over_quota_successes + report.invalid_key_successes),
        ),
    ];
    let label_width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let value_width = rows
        .iter()
        .map(|(_, v)| v.split(' ').next().map_or(0, str::len))
        .max()
        .unwrap_or(0);
    for (label, value) in &rows {
        // Right-align the number, let any explanation follow it.
        let (number, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = if rest.is_empty() {
            String::new()
        } else {
            format!(" {rest}")
        };
        out.push_str(&format!(
            "  {label:<label_width$}  {number:>value_width$}{rest}\n"
        ));
    }

    let samples = &report.samples;
    if samples.len() >= 2 {
        let series =
            |f: fn(&simulate::Sample) -> u64| -> Vec<u64> { samples.iter().map(f).collect() };
        let keys = config.keys as u64;
        let workers = config.workers as u64;
        out.push_str(&format!(
            "\nover time: key states every {}, workers waiting on average in between\n\
             (a full bar is {} keys or {} workers)\n",
            format_duration(config.sample_every),
            config.keys,
            config.workers
        ));
        let lines: [(&str, Vec<u64>, u64); 4] = [
            ("fresh", series(|s| s.fresh), keys),
            ("expired", series(|s| s.expired), keys),
            ("invalid", series(|s| s.invalid), keys),
            (
                "waiting workers",
                series(|s| s.workers_waiting_mean.round() as u64),
                workers,
            ),
        ];
        let mut chart_width = 0;
        for (name, values, max) in &lines {
            let line = sparkline(values, *max, CHART_WIDTH);
            chart_width = chart_width.max(line.chars().count());
            let lo = values.iter().min().copied().unwrap_or(0);
            let hi = values.iter().max().copied().unwrap_or(0);
            out.push_str(&format!("  {name:<15} |{line}| {lo}..{hi}\n"));
        }
        let end = format_duration(config.duration);
        let pad = chart_width.saturating_sub(end.len() + 1);
        out.push_str(&format!("  {:<15}  0{:>pad$}{end}\n", "", "", pad = pad));
    }
    out
}
