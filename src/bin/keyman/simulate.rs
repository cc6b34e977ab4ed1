//! `keyman simulate`: runs the orchestrator's engine in virtual time against a
//! simulated GitHub-like API and prints what keyman does for the throughput of a
//! fleet of Augur-like workers. Needs no server.

use format::{format_duration, hours, percent, sparkline, thousands};
use keyman::Selection;
use keyman::simulate::{self, ClientBehaviour, ConfigError, Orchestrator, Report, SimConfig};
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

mod args;
mod format;

pub use args::SimulateArgs;

/// The widest a chart line gets, in characters.
const CHART_WIDTH: usize = 72;

/// Runs `keyman simulate`: prints the report (a table, or JSON with `--json`) on
/// standard output and a progress bar on standard error. Exits with 2 when the
/// options cannot be simulated.
pub fn run(args: SimulateArgs) -> ExitCode {
    let configs = args.configs();
    for config in &configs {
        if let Err(e) = config.validate() {
            eprintln!("keyman simulate: {e}");
            return ExitCode::from(2);
        }
    }
    let bar = indicatif::ProgressBar::new(1000);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "simulating {bar:40.cyan/blue} {percent:>3}% of the virtual time",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let runs = configs.len() as f64;
    let mut reports = Vec::with_capacity(configs.len());
    for (i, config) in configs.iter().enumerate() {
        let outcome = simulate::run(config, &mut |done| {
            bar.set_position(((i as f64 + done) / runs * 1000.0) as u64);
        });
        match outcome {
            Ok(report) => reports.push(report),
            Err(e) => {
                bar.finish_and_clear();
                return config_error(e);
            }
        }
    }
    let wall = started.elapsed();
    bar.finish_and_clear();
    let text = if args.json {
        let json = match reports.as_slice() {
            [one] => serde_json::to_string_pretty(one),
            all => serde_json::to_string_pretty(&serde_json::json!({ "runs": all })),
        };
        match json {
            Ok(text) => text + "\n",
            Err(e) => {
                eprintln!("keyman simulate: cannot write the report as JSON: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        match (configs.as_slice(), reports.as_slice()) {
            ([config], [report]) => table(config, report, wall),
            _ => side_by_side(&configs, &reports, wall),
        }
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

/// The first lines of a table: what was simulated.
fn heading(config: &SimConfig, wall: Duration) -> String {
    let floor = match config.floor {
        Some(f) => format!("floor {f}"),
        None => "no floor".to_string(),
    };
    let mut out = format!(
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
    );
    let mut scenario = Vec::new();
    if config.selection != Selection::Uniform {
        scenario.push(format!(
            "keyman chooses {}",
            simulate::selection_name(config.selection)
        ));
    }
    if !config.stagger_waits {
        scenario.push("keyman's wait hints not staggered".to_string());
    }
    if !config.ramp_up.is_zero() {
        scenario.push(format!(
            "workers start over {}",
            format_duration(config.ramp_up)
        ));
    }
    if config.is_extended() {
        if config.donor_calls > 0 {
            scenario.push(format!(
                "a donor makes {} calls/hour outside keyman",
                config.donor_calls
            ));
        }
        if let Some(a) = config.accounts {
            scenario.push(format!("keys in {a} accounts"));
        }
        if config.skew_seconds != 0 {
            scenario.push(format!(
                "platform clock {:+} s from ours",
                config.skew_seconds
            ));
        }
        if let Some(m) = config.max_concurrent {
            scenario.push(format!("at most {m} calls in flight per account"));
        }
    }
    if !scenario.is_empty() {
        // Before the blank line that ends the heading.
        out.truncate(out.len() - 1);
        out.push_str(&format!("scenario: {}\n\n", scenario.join(", ")));
    }
    out
}

/// The rows of the quota extension's figures.
fn figure_rows(config: &SimConfig, report: &Report) -> Vec<(&'static str, String)> {
    let per_served = if report.calls_served == 0 {
        0.0
    } else {
        report.rate_limited as f64 / report.calls_served as f64
    };
    let mut rows = vec![
        (
            "403 from keyman's own grants",
            thousands(report.forbidden_own),
        ),
        ("403 from outside use", thousands(report.forbidden_outside)),
        (
            "403 per 1 000 calls served",
            format!("{:.2}", per_served * 1000.0),
        ),
        ("calls below the floor", thousands(report.calls_below_floor)),
        (
            "holders of a key as it runs out",
            format!("{} (median)", report.holders_at_run_out_median),
        ),
    ];
    if config.max_concurrent.is_some() {
        rows.push((
            "403 of the secondary limit",
            thousands(report.secondary_limited),
        ));
    }
    if config.donor_calls > 0 {
        rows.push((
            "donor calls served",
            format!(
                "{} of {}",
                thousands(report.donor_calls_served),
                thousands(report.donor_calls_made)
            ),
        ));
    }
    if report.reports_sent > 0 || report.engine_rejected > 0 {
        rows.push(("leases granted (NEW)", thousands(report.leases_granted)));
        rows.push(("REPORT sent", thousands(report.reports_sent)));
        rows.push(("messages rejected", thousands(report.engine_rejected)));
    }
    rows
}

/// The report as a table for people.
fn table(config: &SimConfig, report: &Report, wall: Duration) -> String {
    let mut out = heading(config, wall);
    let mut rows: Vec<(&str, String)> = vec![
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
    if config.probe {
        rows.push(("probes made (no quota spent)", thousands(report.probes)));
    }
    // The default run keeps its table as it always was.
    if config.is_extended() {
        rows.extend(figure_rows(config, report));
    }
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

/// Several runs on the same traffic and seed, one column each.
fn side_by_side(configs: &[SimConfig], reports: &[Report], wall: Duration) -> String {
    let Some(first) = configs.first() else {
        return String::new();
    };
    let mut out = heading(
        &SimConfig {
            clients: ClientBehaviour::Augur,
            orchestrator: Orchestrator::Keyman,
            ..first.clone()
        },
        wall,
    );
    let name = |c: &SimConfig| match c.orchestrator {
        Orchestrator::Keyman if !c.stagger_waits => "keyman, exact",
        Orchestrator::Keyman => "keyman",
        Orchestrator::Augur => "Augur",
    };
    let client = |c: ClientBehaviour| match c {
        ClientBehaviour::Augur => "Augur",
        ClientBehaviour::Keyman => "keyman",
    };
    let heads: Vec<(String, String)> = configs
        .iter()
        .map(|c| {
            (
                format!("{} clients", client(c.clients)),
                format!("{} orch.{}", name(c), if c.probe { " probing" } else { "" }),
            )
        })
        .collect();
    let mut rows: Vec<(&str, Vec<String>)> = Vec::new();
    let mut add = |label: &'static str, f: &dyn Fn(&SimConfig, &Report) -> String| {
        rows.push((
            label,
            configs.iter().zip(reports).map(|(c, r)| f(c, r)).collect(),
        ));
    };
    add("calls served (2xx)", &|_, r| thousands(r.calls_served));
    add("key utilization", &|_, r| percent(r.utilization));
    add("rate limited (403)", &|_, r| thousands(r.rate_limited));
    add("403 from keyman's own grants", &|_, r| {
        thousands(r.forbidden_own)
    });
    add("403 from outside use", &|_, r| {
        thousands(r.forbidden_outside)
    });
    add("403 per 1 000 calls served", &|_, r| {
        if r.calls_served == 0 {
            "0.00".to_string()
        } else {
            format!(
                "{:.2}",
                r.rate_limited as f64 * 1000.0 / r.calls_served as f64
            )
        }
    });
    add("calls below the floor", &|_, r| {
        thousands(r.calls_below_floor)
    });
    if configs.iter().any(|c| c.probe) {
        add("unauthorized (401)", &|_, r| thousands(r.unauthorized));
        add("probes made", &|_, r| thousands(r.probes));
    }
    add("holders of a key as it runs out", &|_, r| {
        format!("{}", r.holders_at_run_out_median)
    });
    if first.max_concurrent.is_some() {
        add("403 of the secondary limit", &|_, r| {
            thousands(r.secondary_limited)
        });
    }
    if first.donor_calls > 0 {
        add("donor calls served", &|_, r| {
            format!(
                "{}/{}",
                thousands(r.donor_calls_served),
                thousands(r.donor_calls_made)
            )
        });
    }
    add("waiting per worker", &|_, r| {
        hours(r.waiting_seconds_per_worker).replace(' ', "\u{a0}")
    });
    add("waiting share", &|_, r| {
        percent(r.waiting_share).replace(' ', "\u{a0}")
    });
    add("keys handed out (NEW)", &|_, r| {
        thousands(r.keys_handed_out)
    });
    add("wait hints (NEW)", &|_, r| thousands(r.wait_replies));
    add("leases granted (NEW)", &|_, r| thousands(r.leases_granted));
    add("REPORT sent", &|_, r| thousands(r.reports_sent));
    add("messages rejected", &|_, r| thousands(r.engine_rejected));
    add("calls served over quota", &|_, r| {
        thousands(r.over_quota_successes + r.invalid_key_successes)
    });
    let label_width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let widths: Vec<usize> = heads
        .iter()
        .enumerate()
        .map(|(i, (a, b))| {
            rows.iter()
                .map(|(_, v)| v[i].chars().count())
                .chain([a.len(), b.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    for line in 0..2 {
        out.push_str(&format!("  {:label_width$}", ""));
        for (i, (a, b)) in heads.iter().enumerate() {
            let text = if line == 0 { a } else { b };
            out.push_str(&format!("  {text:>w$}", w = widths[i]));
        }
        out.push('\n');
    }
    for (label, values) in &rows {
        out.push_str(&format!("  {label:<label_width$}"));
        for (i, v) in values.iter().enumerate() {
            let pad = widths[i].saturating_sub(v.chars().count());
            out.push_str(&format!("  {}{v}", " ".repeat(pad)));
        }
        out.push('\n');
    }
    out.replace('\u{a0}', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use keyman::simulate::DEFAULT_SEED;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn parse(args: &[&str]) -> SimulateArgs {
        Cli::parse_from(std::iter::once("simulate").chain(args.iter().copied())).args
    }

    #[test]
    fn the_default_options_are_the_default_simulation() {
        let args = parse(&[]);
        assert_eq!(args.config(), SimConfig::default());
        assert!(!args.config().is_extended());
        assert_eq!(args.configs().len(), 1);
    }

    #[test]
    fn both_and_both_give_four_runs_on_the_same_traffic() {
        let args = parse(&[
            "--clients",
            "both",
            "--orchestrator",
            "both",
            "--skew",
            "-30",
            "--donor-calls",
            "600",
            "--accounts",
            "10",
            "--max-concurrent",
            "5",
        ]);
        let runs: Vec<(Orchestrator, ClientBehaviour)> = args
            .configs()
            .iter()
            .map(|c| (c.orchestrator, c.clients))
            .collect();
        assert_eq!(
            runs,
            [
                (Orchestrator::Keyman, ClientBehaviour::Augur),
                (Orchestrator::Keyman, ClientBehaviour::Keyman),
                (Orchestrator::Augur, ClientBehaviour::Augur),
                (Orchestrator::Augur, ClientBehaviour::Keyman),
            ]
        );
        for c in args.configs() {
            assert!(c.stagger_waits);
            assert_eq!(c.skew_seconds, -30);
            assert_eq!(c.donor_calls, 600);
            assert_eq!(c.accounts, Some(10));
            assert_eq!(c.max_concurrent, Some(5));
            assert_eq!(c.seed, DEFAULT_SEED);
        }
    }

    #[test]
    fn all_orchestrators_add_keyman_with_exact_wait_hints() {
        let args = parse(&["--orchestrator", "all", "--ramp-up", "1m"]);
        let runs: Vec<(Orchestrator, bool)> = args
            .configs()
            .iter()
            .map(|c| (c.orchestrator, c.stagger_waits))
            .collect();
        assert_eq!(
            runs,
            [
                (Orchestrator::Keyman, true),
                (Orchestrator::Keyman, false),
                (Orchestrator::Augur, true),
            ]
        );
        assert!(
            args.configs()
                .iter()
                .all(|c| c.ramp_up == Duration::from_secs(60))
        );
        let exact = parse(&["--no-stagger", "--selection", "least-assigned"]).config();
        assert!(!exact.stagger_waits);
        assert_eq!(exact.selection, Selection::LeastAssigned);
    }

    #[test]
    fn probe_alone_runs_without_and_with_probes_and_on_only_with() {
        let both: Vec<bool> = parse(&["--probe"])
            .configs()
            .iter()
            .map(|c| c.probe)
            .collect();
        assert_eq!(both, [false, true]);
        let on: Vec<bool> = parse(&["--probe", "on"])
            .configs()
            .iter()
            .map(|c| c.probe)
            .collect();
        assert_eq!(on, [true]);
        assert!(!parse(&[]).config().probe);
    }
}
