//! The fuzz targets' bodies (protocol decoding, the engine, saved state
//! records with their quota entries) on a fixed, seeded set of inputs, so
//! that every test run covers what the fuzzers check (without a fuzzer, and
//! reproducibly).
//! The engine body reads its bytes as `Operation`s through `arbitrary`, so it
//! runs with the feature `arbitrary` (`--all-features`).

use keyman::SplitMix64;
#[cfg(feature = "arbitrary")]
use keyman::Stats;
use keyman::harness::fuzz::decode_bytes;
#[cfg(feature = "arbitrary")]
use keyman::harness::fuzz::drive_engine;
#[cfg(feature = "arbitrary")]
use keyman::harness::leases::Tally;
use rand_core::Rng;

/// Valid payloads of every shape: announces, requests (Augur's spacing and ours)
/// and replies.
const SAMPLES: &[&[u8]] = &[
    br#"{"type": "PUBLISH", "key_str": "ghp_abc", "key_platform": "github_rest"}"#,
    br#"{"type":"UNPUBLISH","key_str":"k","key_platform":"p"}"#,
    br#"{"type": "ACK", "requester_id": 4711}"#,
    br#"{"type":"LIST_PLATFORMS","requester_id":"adm","request_id":3}"#,
    br#"{"type":"LIST_KEYS","requester_id":1,"key_platform":"gitlab_rest"}"#,
    br#"{"type":"LIST_INVALID_KEYS","requester_id":1,"key_platform":"p"}"#,
    br#"{"type":"STATUS","requester_id":"x"}"#,
    br#"{"type": "SHUTDOWN"}"#,
    br#"{"key_platform": "github_rest", "type": "NEW", "requester_id": 4711}"#,
    br#"{"type":"EXPIRE","key_str":"k","key_platform":"p","refresh_time":1700000000,"requester_id":1}"#,
    br#"{"type":"EXPIRE","key_str":"k","key_platform":"p","refresh_time":1700000000.25}"#,
    br#"{"type":"INVALIDATE","key_str":"k","key_platform":"p","requester_id":"w-1"}"#,
    br#"{"key":"ghp_abc"}"#,
    br#"{"key": null}"#,
    br#"{"wait": 17}"#,
    br#"{"wait": 2.5, "request_id": "r"}"#,
    br#"{"error":"no usable keys","code":"no_keys","request_id":9}"#,
    br#"{"status": "unknown platform: q"}"#,
    br#"["a","b"]"#,
    br#"{"list":[],"request_id":1}"#,
    br#"{"ack":true,"request_id":"z"}"#,
    br#"{"platforms":[{"platform":"p","fresh":1,"expired":0,"invalid":2,"next_refresh":null}]}"#,
    b"",
    br#""""#,
];

/// Bytes that a mutation inserts: JSON's punctuation and the protocol's words.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"\\",
    b"\\u0000",
    b"null",
    b"true",
    b"-",
    b"1e999",
    b"0.5",
    b"18446744073709551616",
    b"\"type\"",
    b"\"requester_id\"",
    b"\"key_str\"",
    b"\"refresh_time\"",
    b"\"NEW\"",
    b"\"EXPIRE\"",
    b"\xff",
    b"\xc3\xa9",
];

fn below(rng: &mut SplitMix64, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

fn mutated(rng: &mut SplitMix64) -> Vec<u8> {
    let sample = SAMPLES[below(rng, SAMPLES.len())];
    mutate(rng, sample)
}

/// `sample` with a few random changes: bits flipped, bytes dropped, tokens
/// and repeated spans inserted.
fn mutate(rng: &mut SplitMix64, sample: &[u8]) -> Vec<u8> {
    let mut bytes = sample.to_vec();
    for _ in 0..=below(rng, 4) {
        let at = below(rng, bytes.len() + 1);
        match below(rng, 5) {
            0 if at < bytes.len() => bytes[at] ^= 1 << below(rng, 8),
            1 if at < bytes.len() => {
                let end = (at + below(rng, 8)).min(bytes.len());
                bytes.drain(at..end);
            }
            2 | 3 => {
                let token = TOKENS[below(rng, TOKENS.len())];
                bytes.splice(at..at, token.iter().copied());
            }
            _ => {
                let span = bytes[at..]
                    .iter()
                    .take(below(rng, 16))
                    .copied()
                    .collect::<Vec<_>>();
                bytes.splice(at..at, span);
            }
        }
    }
    bytes
}

fn random_bytes(rng: &mut SplitMix64, max_len: usize) -> Vec<u8> {
    let mut bytes = vec![0; below(rng, max_len + 1)];
    rng.fill_bytes(&mut bytes);
    bytes
}

#[test]
fn decoding_any_bytes_round_trips_or_fails_cleanly() {
    for sample in SAMPLES {
        decode_bytes(sample);
    }
    let mut rng = SplitMix64::new(0xDEC0DE);
    for _ in 0..20_000 {
        let input = match below(&mut rng, 4) {
            0 => random_bytes(&mut rng, 64),
            _ => mutated(&mut rng),
        };
        decode_bytes(&input);
    }
}

#[cfg(feature = "arbitrary")]
#[test]
fn driving_the_engine_with_any_bytes_keeps_its_invariants() {
    let mut rng = SplitMix64::new(0xE261E);
    let mut total = Stats::default();
    let mut leases = Tally::default();
    for _ in 0..10_000 {
        let (s, t) = drive_engine(&random_bytes(&mut rng, 400));
        leases.add(t);
        total.handled += s.handled;
        total.rejected += s.rejected;
        total.assigned += s.assigned;
        total.waits += s.waits;
        total.errors += s.errors;
        total.holds_total += s.holds_total;
    }
    // The inputs reach every outcome of a request, not only the rejections.
    assert!(
        total.assigned > 0 && total.waits > 0 && total.errors > 0 && total.holds_total > 0,
        "{total:?}"
    );
    assert!(total.handled > total.rejected, "{total:?}");
    // And the quota extension's: leases lent (to held requests too), ended by
    // a REPORT and at their deadline, within the budget of known accounts.
    assert!(
        leases.granted > 0
            && leases.granted_held > 0
            && leases.ended_by_report > 0
            && leases.ended_at_deadline > 0
            && leases.budgets_checked > 0,
        "{leases:?}"
    );
}

/// Saved state records with keys in every state and quota entries of every
/// kind (views with a skew, a named account, outstanding leases).
fn saved_state() -> keyman::pool::StateRecords {
    use keyman::quota::Observation;
    use keyman::{Engine, EngineConfig, Timestamp};
    let mut e = Engine::new(EngineConfig::default(), SplitMix64::new(3));
    let t = Timestamp::from_secs;
    for k in ["ghp_a", "ghp_b", "ghp_c", "ghp_d"] {
        e.publish(t(0), "github_rest", k);
    }
    e.publish_account(t(0), "github_rest", "ghp_c", Some("alice"), Some(5000));
    e.publish_account(t(0), "github_rest", "ghp_d", Some("alice"), None);
    e.expire(t(0), "github_rest", "ghp_b", t(3_600));
    e.publish(t(0), "gitlab_rest", "glpat_a");
    e.invalidate(t(0), "gitlab_rest", "glpat_a");
    let seen = |remaining, date| Observation {
        remaining: Some(remaining),
        limit: Some(5000),
        reset: Some(t(3_600)),
        resource: Some("core".into()),
        server_date: Some(t(date)),
    };
    e.report(t(1), "github_rest", "ghp_a", &seen(4_000, 31), None);
    e.report(t(1), "github_rest", "ghp_d", &seen(900, 0), None);
    e.lease(t(2), "github_rest", 50);
    e.lease(t(2), "github_rest", 50);
    // One more lease, returned with the calls it used: a view with calls
    // counted against it since it was seen.
    if let keyman::Leased::Granted { key, lease } = e.lease(t(3), "github_rest", 20) {
        let done = keyman::quota::LeaseReturn {
            lease_id: lease.id,
            used: Some(7),
            done: true,
        };
        e.report(
            t(4),
            "github_rest",
            &key,
            &Observation::default(),
            Some(done),
        );
    }
    e.encode_all_records()
}

/// The seed corpus of the state fuzz target (`fuzz/seeds/state/`).
fn seeds_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/state")
}

/// Writes the seed corpus of the state fuzz target: the saved state above,
/// framed as the target reads it, whole and one record at a time. Run it
/// with `--ignored` after a change of the saved form.
#[test]
#[ignore = "writes fuzz/seeds/state"]
fn write_the_state_seed_corpus() {
    let records = saved_state();
    let dir = seeds_dir();
    std::fs::create_dir_all(&dir).expect("the seed directory");
    std::fs::write(dir.join("quota-all"), framed(&records)).expect("a seed");
    for (i, (name, value)) in records.iter().enumerate() {
        let one = framed([(name, value)]);
        std::fs::write(dir.join(format!("quota-record-{i}")), one).expect("a seed");
    }
}

#[test]
fn the_state_seed_corpus_holds_quota_entries_that_round_trip() {
    let mut quota = 0;
    for entry in std::fs::read_dir(seeds_dir()).expect("fuzz/seeds/state exists") {
        let bytes = std::fs::read(entry.expect("a directory entry").path()).expect("a seed");
        keyman::pool::check_state_decoding(&bytes);
        let text = String::from_utf8_lossy(&bytes);
        if ["\"leases\"", "\"Named\"", "offset_ms", "spent"]
            .iter()
            .all(|part| text.contains(part))
        {
            quota += 1;
        }
    }
    assert!(quota > 0, "no seed holds views, accounts and leases");
}

/// `records` as the state fuzz target reads them: `1`, then `name \0 value \0 ...`.
fn framed<'a>(records: impl IntoIterator<Item = (&'a String, &'a Vec<u8>)>) -> Vec<u8> {
    let mut out = vec![1u8];
    for (name, value) in records {
        out.extend(name.as_bytes());
        out.push(0);
        out.extend(value);
        out.push(0);
    }
    out
}

#[test]
fn decoding_any_saved_state_never_panics_and_round_trips() {
    let records = saved_state();
    let text: String = records
        .values()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    for part in [
        "\"quota\"",
        "\"leases\"",
        "\"members\"",
        "\"Named\"",
        "offset_ms",
        "\"spent\"",
        "spent_at",
    ] {
        assert!(text.contains(part), "{part} not in the sample: {text}");
    }
    keyman::pool::check_state_decoding(&framed(&records));
    let names: Vec<&String> = records.keys().collect();
    let mut rng = SplitMix64::new(0x57A7E);
    for _ in 0..3_000 {
        // One record changed, the others as saved.
        let name = names[below(&mut rng, names.len())];
        let changed = mutate(&mut rng, &records[name]);
        let input = framed(
            records
                .iter()
                .map(|(n, v)| (n, if n == name { &changed } else { v })),
        );
        keyman::pool::check_state_decoding(&input);
        keyman::pool::check_state_decoding(&random_bytes(&mut rng, 96));
    }
}

/// Inputs the fuzzers once found a fault with (`fuzz/regressions/`, named
/// after their target), replayed so that the fault stays fixed.
#[test]
fn inputs_the_fuzzers_found_faults_with_stay_fixed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/regressions exists") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let bytes = std::fs::read(&path).expect("a regression input");
        if name.starts_with("decode-") {
            decode_bytes(&bytes);
            replayed += 1;
        } else if name.starts_with("state-") {
            keyman::pool::check_state_decoding(&bytes);
            replayed += 1;
        } else if name.starts_with("engine-") {
            #[cfg(feature = "arbitrary")]
            {
                drive_engine(&bytes);
                replayed += 1;
            }
        }
    }
    assert!(replayed > 0, "no regression inputs in {}", dir.display());
}
