//! A worker that calls a rate-limited HTTP API with leased calls and lets
//! keyman read the response headers: it borrows a few calls of a key
//! (`KeySource::lease`), and after every call hands the status and an
//! `http::HeaderMap` to `KeySource::observe_lease`, which keeps the lease,
//! returns it and takes another once its calls are used, or expires or
//! invalidates the key and leases another. The pool never lends more calls
//! than a key has left, so leases never overdraw a key.
//!
//! The API is a small fake of GitHub's REST API on a loopback port, started by
//! this example: each key has 5 calls per window of one to two seconds
//! (`x-ratelimit-limit`, `-remaining`, `-used`, `-reset`, `-resource`), a spent
//! key gets 403, a revoked key gets 401, the 9th call hits a secondary limit
//! (403 with `Retry-After: 1`), and the platform's clock runs 30 s behind ours
//! (its `Date` and `x-ratelimit-reset` are 30 s "early"), as in Augur #3598.
//!
//! The worker never gets a 403 for a spent quota: the pool lends no call a key
//! does not have, and a key is retired on the 200 that says no call remains,
//! until the reset converted to its own clock.
//!
//! ```text
//! cargo run --example worker --features http
//! ```

use http::{HeaderMap, HeaderName, HeaderValue};
use keyman::Masked;
use keyman::ratelimit::RateLimit;
use keyman::service::embedded::EmbeddedPool;
use keyman::service::{KeyAdmin, KeySource, Next, wall_clock};
use std::collections::HashMap;
use std::error::Error;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

const PLATFORM: &str = "github_rest";
const KEYS: [&str; 4] = [
    "ghp_alpha000000000000000000000000000000",
    "ghp_bravo000000000000000000000000000000",
    "ghp_charlie00000000000000000000000000000",
    "ghp_revoked00000000000000000000000000000",
];
/// Calls per key per window.
const LIMIT: u64 = 5;
/// How far the platform's clock is behind ours.
const PLATFORM_LAG: Duration = Duration::from_secs(30);
const CALLS: usize = 30;
/// Calls asked for with each lease.
const LEASE: u64 = 3;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let api = start_fake_github()?;
    println!("fake GitHub API on http://{api} (its clock 30 s behind ours)");

    let pool = EmbeddedPool::builder()
        .with_deadline(Duration::from_secs(10))
        .build();
    for key in KEYS {
        // The limit is a hint until the first response says more.
        pool.publish_account(PLATFORM, key, None, Some(LIMIT))
            .await?;
    }
    let source: &dyn KeySource = &pool;

    let started = Instant::now();
    let mut tally: HashMap<u16, usize> = HashMap::new();
    let (mut expired, mut invalidated, mut renewed, mut spent_403) = (0, 0, 0, 0);
    let mut leased = source.lease(PLATFORM, LEASE).await?;
    for n in 1..=CALLS {
        let key = leased.key().to_string();
        let lent = leased.lease().map_or(0, |l| l.calls);
        let (status, headers) = {
            let key = key.clone();
            tokio::task::spawn_blocking(move || get(api, "/repos/chaoss/augur", &key)).await??
        };
        *tally.entry(status).or_default() += 1;
        let seen = RateLimit::from_header_map(&headers);
        if status == 403 && seen.remaining == Some(0) {
            spent_403 += 1;
        }
        let remaining = seen.remaining.map_or("?".to_string(), |r| r.to_string());
        let (before, asked) = (wall_clock(), Instant::now());
        let next = source.observe_lease(&mut leased, status, &seen).await?;
        let waited = match asked.elapsed() {
            w if w >= Duration::from_millis(50) => {
                format!(" (waited {:.1}s for it)", w.as_secs_f32())
            }
            _ => String::new(),
        };
        let t = started.elapsed().as_secs_f32();
        match &next {
            Next::Expired {
                key: new,
                refresh_at,
                secondary,
            } => {
                expired += 1;
                let why = if *secondary {
                    "secondary limit"
                } else {
                    "quota spent"
                };
                let rest = refresh_at.saturating_since(before).as_secs_f32();
                println!(
                    "{t:5.2}s call {n:2}: {status} remaining {remaining:>2} with {} -> {why}, it rests {rest:.1}s; next key {}{waited}",
                    name(&key),
                    name(new)
                );
            }
            Next::Invalidated { key: new } => {
                invalidated += 1;
                println!(
                    "{t:5.2}s call {n:2}: {status}                with {} -> revoked; next key {}{waited}",
                    name(&key),
                    name(new)
                );
            }
            Next::Renewed { key: new } => {
                renewed += 1;
                println!(
                    "{t:5.2}s call {n:2}: {status} remaining {remaining:>2} with {} -> its {lent} leased calls used; next lease: {} calls of {}{waited}",
                    name(&key),
                    leased.lease().map_or(0, |l| l.calls),
                    name(new)
                );
            }
            _ => println!(
                "{t:5.2}s call {n:2}: {status} remaining {remaining:>2} with {} ({} of {lent} leased calls left)",
                name(&key),
                leased.calls_left().unwrap_or(0)
            ),
        }
    }
    source.release(leased).await?;

    let count = |s: u16| tally.get(&s).copied().unwrap_or(0);
    println!(
        "\n{CALLS} calls in {:.1}s: {} x 200, {} x 403, {} x 401",
        started.elapsed().as_secs_f32(),
        count(200),
        count(403),
        count(401)
    );
    println!(
        "leases renewed: {renewed}; keys switched: {} ({expired} expired, {invalidated} invalidated); 403 for a spent quota: {spent_403}",
        expired + invalidated
    );
    if spent_403 > 0 {
        return Err("the worker was refused for a quota it should have known was spent".into());
    }
    Ok(())
}

/// A name to print for one of the example's keys: keys are secrets, never
/// printed whole (a key that is not ours is shown masked).
fn name(key: &str) -> String {
    const NAMES: [&str; 4] = ["alpha", "bravo", "charlie", "revoked"];
    match KEYS.iter().position(|k| *k == key) {
        Some(i) => NAMES[i].to_string(),
        None => Masked(key).to_string(),
    }
}

/// One `GET path` with `key` as a GitHub token: the status and the headers of
/// the response. A minimal HTTP/1.1 client: enough for the fake API below.
fn get(
    api: SocketAddr,
    path: &str,
    key: &str,
) -> Result<(u16, HeaderMap), Box<dyn Error + Send + Sync>> {
    let mut stream = TcpStream::connect(api)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {api}\r\nAuthorization: token {key}\r\nUser-Agent: keyman-worker-example\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("the response has no status line")?;
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            headers.append(
                HeaderName::from_bytes(name.trim().as_bytes())?,
                HeaderValue::from_str(value.trim())?,
            );
        }
    }
    Ok((status, headers))
}

/// The state of one key at the fake API.
struct Window {
    /// When the window resets, Unix seconds by the platform's clock.
    reset: u64,
    used: u64,
}

/// Starts the fake API on a free loopback port, answering on a thread of its own.
fn start_fake_github() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        let mut windows: HashMap<String, Window> = HashMap::new();
        let mut calls = 0u64;
        for stream in listener.incoming().flatten() {
            calls += 1;
            // The example's own server: a broken connection is just skipped.
            let _ = answer(stream, &mut windows, calls);
        }
    });
    Ok(addr)
}

fn answer(
    mut stream: TcpStream,
    windows: &mut HashMap<String, Window>,
    call: u64,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let request = String::from_utf8_lossy(&request);
    let token = request
        .lines()
        .find_map(|l| l.strip_prefix("Authorization: token "))
        .unwrap_or("")
        .trim()
        .to_string();

    // The platform's clock, 30 s behind ours.
    let now_ms = wall_clock()
        .as_millis()
        .saturating_sub(PLATFORM_LAG.as_millis() as u64);
    let now = now_ms / 1000;
    let date = keyman::ratelimit::format_http_date(keyman::Timestamp::from_secs(now));
    let mut headers = vec![("Date".to_string(), date)];
    let (status, body) = if !KEYS[..3].contains(&token.as_str()) {
        (401, r#"{"message": "Bad credentials"}"#)
    } else {
        let w = windows.entry(token).or_insert(Window { reset: 0, used: 0 });
        if now_ms >= w.reset * 1000 {
            // A new window, reset at the next second boundary but one.
            *w = Window {
                reset: now_ms.div_ceil(1000) + 1,
                used: 0,
            };
        }
        let secondary = call == 9 && w.used < LIMIT;
        let (status, body) = if secondary {
            headers.push(("Retry-After".into(), "1".into()));
            (
                403,
                r#"{"message": "You have exceeded a secondary rate limit."}"#,
            )
        } else if w.used >= LIMIT {
            (403, r#"{"message": "API rate limit exceeded."}"#)
        } else {
            w.used += 1;
            (200, r#"{"full_name": "chaoss/augur"}"#)
        };
        for (name, value) in [
            ("x-ratelimit-limit", LIMIT.to_string()),
            ("x-ratelimit-remaining", (LIMIT - w.used).to_string()),
            ("x-ratelimit-used", w.used.to_string()),
            ("x-ratelimit-reset", w.reset.to_string()),
            ("x-ratelimit-resource", "core".to_string()),
        ] {
            headers.push((name.into(), value));
        }
        (status, body)
    };
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        _ => "Forbidden",
    };
    let mut response = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    stream.write_all(response.as_bytes())
}
