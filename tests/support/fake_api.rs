//! A fake GitHub and GitLab API on a free loopback port, for the probe tests:
//! `GET /rate_limit` with per-token resources, `GET /user`, GitLab's
//! `GET /api/v4/personal_access_tokens/self`, 401 for revoked or unknown
//! tokens, a `Date` header that can be skewed, and 403/429 on demand to test
//! the probes' backoff. Every request is recorded (time, path, token). Never
//! the real API.

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One token as the fake API sees it.
#[derive(Debug, Clone)]
pub struct Token {
    pub revoked: bool,
    /// Per resource (`core`, `graphql`, `search`): limit, remaining, reset
    /// (Unix seconds on the API's clock).
    pub resources: HashMap<String, (u64, u64, u64)>,
    pub login: Option<String>,
    /// GitHub's `github-authentication-token-expiration` value.
    pub expiration: Option<String>,
    /// GitLab's `expires_at` and `user_id`.
    pub gitlab_expires_at: Option<String>,
    pub gitlab_user: Option<u64>,
}

impl Token {
    /// A valid token with 5 000 calls left of every resource, resetting in an hour.
    pub fn good(api_now: u64) -> Token {
        let resources = ["core", "graphql", "search"]
            .into_iter()
            .map(|r| (r.to_string(), (5000, 5000, api_now + 3600)))
            .collect();
        Token {
            revoked: false,
            resources,
            login: None,
            expiration: None,
            gitlab_expires_at: None,
            gitlab_user: None,
        }
    }

    /// Sets `remaining` and `reset` of every resource.
    pub fn set_quota(&mut self, remaining: u64, reset: u64) {
        for q in self.resources.values_mut() {
            q.1 = remaining;
            q.2 = reset;
        }
    }
}

/// A request the fake API received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub path: String,
    pub token: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Default)]
pub struct ApiState {
    pub tokens: HashMap<String, Token>,
    /// The API's clock minus ours, in seconds.
    pub skew_secs: i64,
    /// Answer the next this many requests with this status and `Retry-After`.
    pub throttle: Option<(u16, Option<u64>, usize)>,
    pub requests: Vec<Seen>,
}

/// The fake API, served until dropped.
pub struct FakeApi {
    addr: SocketAddr,
    pub state: Arc<Mutex<ApiState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Unix seconds now, on our clock.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("its address");
        let state = Arc::new(Mutex::new(ApiState::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let response = respond(&state, &req);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeApi { addr, state, task }
    }

    /// The base URL (`--github-api-url`, `--gitlab-api-url`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The API's clock now, in Unix seconds.
    pub fn api_now(&self) -> u64 {
        let skew = self.state.lock().unwrap().skew_secs;
        unix_now().saturating_add_signed(skew)
    }

    pub fn add(&self, key: &str, token: Token) {
        self.state
            .lock()
            .unwrap()
            .tokens
            .insert(key.to_string(), token);
    }

    pub fn with_token<T>(&self, key: &str, f: impl FnOnce(&mut Token) -> T) -> T {
        let mut state = self.state.lock().unwrap();
        f(state.tokens.get_mut(key).expect("a token of the fake API"))
    }

    /// The requests received so far on `path`.
    pub fn requests(&self, path: &str) -> Vec<Seen> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }

    /// How many times `key` was probed on `path`.
    pub fn probes_of(&self, key: &str, path: &str) -> usize {
        self.requests(path)
            .iter()
            .filter(|s| s.token.as_deref() == Some(key))
            .count()
    }
}

fn respond(state: &Mutex<ApiState>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let user_agent = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let path = req.uri().path().to_string();
    let mut state = state.lock().unwrap();
    state.requests.push(Seen {
        at: Instant::now(),
        path: path.clone(),
        token: token.clone(),
        user_agent,
    });
    let api_now = unix_now().saturating_add_signed(state.skew_secs);
    let date = keyman::ratelimit::format_http_date(keyman::Timestamp::from_secs(api_now));
    if let Some((status, retry, left)) = state.throttle.as_mut() {
        let (status, retry) = (*status, *retry);
        *left -= 1;
        if *left == 0 {
            state.throttle = None;
        }
        let mut r = reply(status, json!({"message": "slow down"}), &date);
        if let Some(s) = retry {
            r.headers_mut()
                .insert("retry-after", s.to_string().parse().unwrap());
        }
        return r;
    }
    let Some(t) = token.as_deref().and_then(|k| state.tokens.get(k)) else {
        return reply(401, json!({"message": "Bad credentials"}), &date);
    };
    if t.revoked {
        return reply(401, json!({"message": "Bad credentials"}), &date);
    }
    match path.as_str() {
        "/rate_limit" => {
            let resources: serde_json::Map<String, serde_json::Value> = t
                .resources
                .iter()
                .map(|(name, (limit, remaining, reset))| {
                    (
                        name.clone(),
                        json!({"limit": limit, "remaining": remaining, "reset": reset, "used": limit - remaining}),
                    )
                })
                .collect();
            let mut r = reply(200, json!({"resources": resources}), &date);
            if let Some(e) = &t.expiration {
                r.headers_mut()
                    .insert("github-authentication-token-expiration", e.parse().unwrap());
            }
            r
        }
        "/user" => match &t.login {
            Some(login) => reply(200, json!({"login": login, "id": 1}), &date),
            None => reply(403, json!({"message": "Resource not accessible"}), &date),
        },
        "/api/v4/personal_access_tokens/self" => {
            let mut r = reply(
                200,
                json!({
                    "id": 1, "name": "keyman", "revoked": false, "active": true,
                    "expires_at": t.gitlab_expires_at, "user_id": t.gitlab_user,
                    "scopes": ["read_api"]
                }),
                &date,
            );
            if let Some((limit, remaining, reset)) = t.resources.get("core") {
                let h = r.headers_mut();
                h.insert("ratelimit-limit", limit.to_string().parse().unwrap());
                h.insert(
                    "ratelimit-remaining",
                    remaining.to_string().parse().unwrap(),
                );
                h.insert("ratelimit-reset", reset.to_string().parse().unwrap());
            }
            r
        }
        _ => reply(404, json!({"message": "Not Found"}), &date),
    }
}

fn reply(status: u16, body: serde_json::Value, date: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r.headers_mut().insert("date", date.parse().unwrap());
    r
}

/// Waits (polling every 20 ms, up to `limit`) until `f` holds.
pub async fn until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}
