//! A small crawler that embeds keyman in its own process: six tokio tasks fetch
//! pages from a (fake) rate-limited API, sharing four API keys through one
//! [`EmbeddedPool`]. No server is involved.
//!
//! Each key may make 25 calls per two-second window; one key is bad. Watch the
//! tasks give keys up when few calls remain (as Augur's workers do) or when the
//! API answers 403, reporting the API's reset time, wait while
//! every key is limited, pick keys up again when they refresh, and report the
//! bad key (401), after which nobody gets it again. Keys are printed masked.
//!
//! Run it with `cargo run --example embedded`.

#[cfg(not(feature = "tokio"))]
fn main() {
    eprintln!("this example needs the `tokio` feature of keyman");
}

#[cfg(feature = "tokio")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    crawler::main()
}

#[cfg(feature = "tokio")]
mod crawler {
    use keyman::service::embedded::EmbeddedPool;
    use keyman::service::{KeyAdmin, KeySource, wall_clock};
    use keyman::{Masked, Timestamp};
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    const PLATFORM: &str = "github_rest";
    const KEYS: [&str; 4] = [
        "ghp_exampleAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "ghp_exampleBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB",
        "ghp_exampleCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC",
        "ghp_revokedDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDD",
    ];
    const TASKS: usize = 6;
    const PAGES_PER_TASK: usize = 20;
    const QUOTA: u32 = 25;
    const WINDOW: Duration = Duration::from_secs(2);
    /// Like Augur's workers, give a key up once fewer calls than this remain.
    const FLOOR: u32 = 3;

    /// What the fake API answers.
    enum Answer {
        /// 200, with the calls left in the key's window and when it resets.
        Page { remaining: u32, reset: Timestamp },
        /// 403: over quota until the reset time.
        RateLimited { reset: Timestamp },
        /// 401: the key is bad.
        Unauthorized,
    }

    /// A rate-limited API in the manner of GitHub's: a quota per key per window,
    /// the window starting at the key's first call.
    #[derive(Default)]
    struct FakeApi {
        /// Per key: (window reset, calls used in the window).
        windows: Mutex<BTreeMap<String, (Timestamp, u32)>>,
    }

    impl FakeApi {
        async fn get(&self, key: &str) -> Answer {
            tokio::time::sleep(Duration::from_millis(20)).await; // the network
            if key.starts_with("ghp_revoked") {
                return Answer::Unauthorized;
            }
            let now = wall_clock();
            let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
            let (reset, used) = windows
                .entry(key.to_string())
                .or_insert((now.saturating_add(WINDOW), 0));
            if now >= *reset {
                *reset = now.saturating_add(WINDOW);
                *used = 0;
            }
            if *used >= QUOTA {
                return Answer::RateLimited { reset: *reset };
            }
            *used += 1;
            Answer::Page {
                remaining: QUOTA - *used,
                reset: *reset,
            }
        }
    }

    /// How the crawler names a key in its output: its number and the key masked.
    fn shown(key: &str) -> String {
        let number = KEYS.iter().position(|k| *k == key).map_or(0, |i| i + 1);
        format!("key {number} ({})", Masked(key))
    }

    fn log(started: Instant, task: usize, what: impl std::fmt::Display) {
        println!(
            "{:>6.2}s  task {task}: {what}",
            started.elapsed().as_secs_f64()
        );
    }

    async fn crawl(
        task: usize,
        keys: EmbeddedPool,
        api: Arc<FakeApi>,
        started: Instant,
    ) -> Result<usize, keyman::KeyError> {
        let mut key = keys.request(PLATFORM).await?;
        log(started, task, format_args!("starts with {}", shown(&key)));
        let mut fetched = 0;
        while fetched < PAGES_PER_TASK {
            match api.get(&key).await {
                Answer::Page { remaining, reset } => {
                    fetched += 1;
                    if remaining < FLOOR {
                        log(
                            started,
                            task,
                            format_args!(
                                "{} has {remaining} calls left: giving it up until its reset",
                                shown(&key)
                            ),
                        );
                        key = keys.expire(PLATFORM, &key, reset).await?;
                        log(
                            started,
                            task,
                            format_args!("continues with {}", shown(&key)),
                        );
                    }
                }
                Answer::RateLimited { reset } => {
                    let wait = reset.saturating_since(wall_clock());
                    log(
                        started,
                        task,
                        format_args!(
                            "403 with {}, resets in {:.1}s: reporting it",
                            shown(&key),
                            wait.as_secs_f64()
                        ),
                    );
                    let asked = Instant::now();
                    key = keys.expire(PLATFORM, &key, reset).await?;
                    log(
                        started,
                        task,
                        format_args!(
                            "continues with {} (after waiting {:.1}s)",
                            shown(&key),
                            asked.elapsed().as_secs_f64()
                        ),
                    );
                }
                Answer::Unauthorized => {
                    log(
                        started,
                        task,
                        format_args!("401 with {}: reporting it as invalid", shown(&key)),
                    );
                    key = keys.invalidate(PLATFORM, &key).await?;
                    log(
                        started,
                        task,
                        format_args!("continues with {}", shown(&key)),
                    );
                }
            }
        }
        Ok(fetched)
    }

    pub fn main() -> Result<(), Box<dyn std::error::Error>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()?;
        runtime.block_on(async {
            let keys = EmbeddedPool::builder()
                .with_deadline(Duration::from_secs(10))
                .build();
            for key in KEYS {
                keys.publish(PLATFORM, key).await?;
            }
            let api = Arc::new(FakeApi::default());
            let started = Instant::now();
            println!(
                "{TASKS} tasks fetch {PAGES_PER_TASK} pages each; {} keys, {QUOTA} calls per key per {}s",
                KEYS.len(),
                WINDOW.as_secs()
            );
            let mut tasks = tokio::task::JoinSet::new();
            for task in 0..TASKS {
                tasks.spawn(crawl(task, keys.clone(), api.clone(), started));
            }
            let mut pages = 0;
            while let Some(done) = tasks.join_next().await {
                match done? {
                    Ok(fetched) => pages += fetched,
                    Err(e) => println!("a task gave up: {e}"),
                }
            }
            println!(
                "\n{pages} pages in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            for status in keys.status().await? {
                println!(
                    "{}: {} fresh, {} rate limited, {} invalid",
                    status.platform, status.fresh, status.expired, status.invalid
                );
            }
            for bad in keys.invalid_keys(PLATFORM).await? {
                println!("invalid: {}", shown(&bad));
            }
            keys.shutdown().await?;
            Ok(())
        })
    }
}
