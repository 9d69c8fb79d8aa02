//! A soak: mixed load through the real `gateway` to the real `authz-server` — header allow,
//! default deny, HS256 JWT, API-key lookups in SQLite (cached 1 s, so the database is queried
//! all along) — while both config files are rewritten and reloaded every 2 s. Every second it
//! samples each binary's resident memory and open descriptors, and the latency of that second's
//! requests.
//!
//! The trend test, after a warm-up (the first sixth of the run, at least 10 s): the median of
//! the last third of the samples against the median of the first third, per series —
//! - RSS: last ≤ first × 1.10 + 2 MiB (allocator arenas settle in steps; a leak of even 1 KiB per
//!   request grows by far more than that over tens of thousands of requests);
//! - open descriptors: last ≤ first + 4;
//! - latency p50 and p99 of each second: last ≤ first × 2.5 + 10 ms (debug binaries on a shared
//!   2-core machine are noisy; a queue or a structure that grows with time would blow past it).
//!
//! Any request that does not get exactly its expected answer fails the soak too.
//!
//! `SOAK_SECONDS` sets the length (default 50; e.g. `SOAK_SECONDS=600` for ten minutes). Each
//! second's figures go to `soak.csv` in the scratch directory the test prints.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e::load::{Answer, Load, get, http_client, median, quantile};
use e2e::procs::Process;
use testkit::{authz_keys, binaries, scratch_dir, write_atomically};
use testkit::{open_fds, rss_kib};

const JWT_SECRET: &str = "soak-secret-0123456789abcdef-0123456789";

fn authz_config(keys_db: &str, generation: u64) -> String {
    format!(
        r#"# generation {generation}
[databases.keys]
url = "sqlite://{keys_db}"
pool_size = 2

[default]
deny = {{ status = 403, body = "no rule" }}

[[rules]]
name = "header"
when = {{ headers = [{{ name = "x-ext-authz", exact = "allow" }}] }}
allow = {{ request_headers = [{{ name = "x-check", value = "header" }}] }}

[[rules]]
name = "jwt"
when = {{ path = {{ prefix = "/jwt" }} }}
[rules.credential]
from = {{ header = "authorization", scheme = "Bearer" }}
[rules.credential.jwt]
algorithms = ["HS256"]
secret = "{JWT_SECRET}"
issuer = "https://issuer.example"
audience = ["soak"]
[rules.allow]
request_headers = [{{ name = "x-user-id", value = "{{{{claims.sub}}}}" }}]

[[rules]]
name = "db"
when = {{ path = {{ prefix = "/db" }} }}
credential = {{ from = {{ header = "x-ai-api-key" }} }}
allow = {{ request_headers = [{{ name = "x-user-id", value = "{{{{db.subject}}}}" }}] }}
[rules.lookup]
database = "keys"
query = "SELECT subject FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
params = [{{ credential = "sha256" }}]
cache_ttl_seconds = 1
negative_ttl_seconds = 1
timeout_ms = 1000
"#
    )
}

fn gateway_config(backend: SocketAddr, authz: SocketAddr, generation: u64) -> String {
    format!(
        r#"# generation {generation}
[[listeners]]
name = "gw"
address = "127.0.0.1:0"

[[backends]]
name = "demo"
url = "http://{backend}"

[[routes]]
name = "all"
path = {{ prefix = "/" }}
backend = "demo"

[[authz_backends]]
name = "authz"
url = "http://{authz}"

[[policies]]
name = "soak"
target_refs = [{{ kind = "Gateway", name = "gw" }}]
ext_auth = {{ backend = "authz", grpc = {{}}, timeout = "2s" }}
"#
    )
}

/// An HS256 token as an identity provider would issue it, valid for an hour.
fn jwt() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let claims = serde_json::json!({
        "sub": "soak-user",
        "iss": "https://issuer.example",
        "aud": "soak",
        "iat": now,
        "exp": now + 3600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("signs")
}

/// Worker kinds, two workers each.
const KINDS: [&str; 4] = ["allow", "deny", "jwt", "db"];

fn expected(kind: &str, answer: &Answer) -> bool {
    match kind {
        "allow" => {
            answer.status() == Some(200)
                && answer.backend_saw("x-check").as_deref() == Some("header")
        }
        "deny" => answer.status() == Some(403) && answer.text() == "no rule",
        "jwt" => {
            answer.status() == Some(200)
                && answer.backend_saw("x-user-id").as_deref() == Some("soak-user")
        }
        _ => {
            answer.status() == Some(200)
                && answer.backend_saw("x-user-id").as_deref() == Some("alice")
        }
    }
}

/// One second of the run.
struct Second {
    authz_rss: f64,
    gateway_rss: f64,
    authz_fds: f64,
    gateway_fds: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_mixed_load_with_reloads_shows_no_upward_trend() {
    let Some([gateway_bin, authz_bin]) = binaries(
        "soak_mixed_load_with_reloads_shows_no_upward_trend",
        ["gateway", "authz-server"],
    ) else {
        return;
    };
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let warmup = (seconds / 6).max(10);
    assert!(
        seconds >= warmup + 15,
        "SOAK_SECONDS={seconds} is too short: at least {}",
        warmup + 15
    );
    let dir = scratch_dir("soak");
    println!("soak: {seconds} s, files in {}", dir.display());

    let keys_db = dir.join("keys.db").display().to_string();
    let db_url = format!("sqlite://{keys_db}");
    authz_keys(&authz_bin, &["init", "--database", &db_url]);
    let alice_key = authz_keys(
        &authz_bin,
        &["add", "--database", &db_url, "--subject", "alice"],
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let backend = listener.local_addr().expect("bound");
    tokio::spawn(gateway::demo_backend::serve(
        listener,
        gateway::demo_backend::DemoOptions {
            sse_delay: Duration::from_millis(100),
        },
    ));
    let authz_file = dir.join("authz.toml");
    std::fs::write(&authz_file, authz_config(&keys_db, 0)).expect("writes");
    let authz = Process::start(
        &authz_bin,
        &[
            "--grpc-addr".into(),
            "127.0.0.1:0".into(),
            "--config".into(),
            authz_file.display().to_string(),
        ],
        &["grpc"],
        &dir.join("authz.stderr.log"),
    );
    let authz_addr = authz.address("grpc");
    let gw_file = dir.join("gateway.toml");
    std::fs::write(&gw_file, gateway_config(backend, authz_addr, 0)).expect("writes");
    let gw = Process::start(
        &gateway_bin,
        &[
            "run".into(),
            "--config".into(),
            gw_file.display().to_string(),
        ],
        &["http"],
        &dir.join("gateway.stderr.log"),
    );
    let gw_addr = gw.address("http");

    let token = format!("Bearer {}", jwt());
    let clients: Vec<_> = (0..KINDS.len() * 2).map(|_| http_client()).collect();
    // 8 workers, a request every 20 ms each: ~400 requests/s offered.
    let load = Load::start(KINDS.len() * 2, Duration::from_millis(20), move |worker| {
        let client = clients[worker].clone();
        let (token, key) = (token.clone(), alice_key.clone());
        async move {
            match KINDS[worker % KINDS.len()] {
                "allow" => get(&client, gw_addr, "/openai", &[("x-ext-authz", "allow")]).await,
                "deny" => get(&client, gw_addr, "/openai", &[]).await,
                "jwt" => get(&client, gw_addr, "/jwt/chat", &[("authorization", &token)]).await,
                _ => get(&client, gw_addr, "/db/chat", &[("x-ai-api-key", &key)]).await,
            }
        }
    });

    // Every second: memory and descriptors; every 2 s: both configs rewritten and reloaded.
    let began = Instant::now();
    let mut process_samples = Vec::new();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    for second in 0..seconds {
        ticks.tick().await;
        if second % 2 == 1 {
            write_atomically(&authz_file, &authz_config(&keys_db, second));
            write_atomically(&gw_file, &gateway_config(backend, authz_addr, second));
            authz.signal("HUP");
            gw.signal("HUP");
        }
        process_samples.push((
            rss_kib(authz.pid()).unwrap_or(0),
            rss_kib(gw.pid()).unwrap_or(0),
            open_fds(authz.pid()),
            open_fds(gw.pid()),
        ));
    }
    let samples = load.stop().await;

    let mut failed = Vec::new();
    let mut per_second: Vec<Vec<Duration>> =
        vec![Vec::new(); usize::try_from(seconds).expect("a soak length that fits memory")];
    for s in &samples {
        if !expected(KINDS[s.worker % KINDS.len()], &s.value) {
            failed.push(s);
        }
        let at = usize::try_from(s.start.saturating_duration_since(began).as_secs())
            .unwrap_or(usize::MAX);
        if let Some(bucket) = per_second.get_mut(at) {
            bucket.push(s.elapsed);
        }
    }
    let mut rows = Vec::new();
    let mut csv = String::from(
        "second,authz_rss_kib,gateway_rss_kib,authz_fds,gateway_fds,requests,p50_ms,p99_ms\n",
    );
    for (second, ((authz_rss, gateway_rss, authz_fds, gateway_fds), latencies)) in process_samples
        .iter()
        .zip(per_second.iter_mut())
        .enumerate()
    {
        let row = Second {
            authz_rss: *authz_rss as f64,
            gateway_rss: *gateway_rss as f64,
            authz_fds: *authz_fds as f64,
            gateway_fds: *gateway_fds as f64,
            requests: latencies.len(),
            p50_ms: quantile(latencies, 0.5).as_secs_f64() * 1000.0,
            p99_ms: quantile(latencies, 0.99).as_secs_f64() * 1000.0,
        };
        let _ = writeln!(
            csv,
            "{second},{},{},{},{},{},{:.2},{:.2}",
            row.authz_rss,
            row.gateway_rss,
            row.authz_fds,
            row.gateway_fds,
            row.requests,
            row.p50_ms,
            row.p99_ms
        );
        rows.push(row);
    }
    std::fs::write(dir.join("soak.csv"), csv).expect("writes soak.csv");

    let measured = &rows[warmup as usize..];
    let third = measured.len() / 3;
    let (first, last) = (&measured[..third], &measured[measured.len() - third..]);
    let med = |rows: &[Second], f: fn(&Second) -> f64| {
        median(&mut rows.iter().map(f).collect::<Vec<_>>())
    };
    type Series = (&'static str, fn(&Second) -> f64, f64, f64);
    let series: [Series; 6] = [
        ("authz_rss_kib", |r| r.authz_rss, 1.10, 2048.0),
        ("gateway_rss_kib", |r| r.gateway_rss, 1.10, 2048.0),
        ("authz_fds", |r| r.authz_fds, 1.0, 4.0),
        ("gateway_fds", |r| r.gateway_fds, 1.0, 4.0),
        ("p50_ms", |r| r.p50_ms, 2.5, 10.0),
        ("p99_ms", |r| r.p99_ms, 2.5, 10.0),
    ];
    let mut report = format!(
        "SOAK {seconds} s (warm-up {warmup} s): requests={} failed={} reloads={} per binary;",
        samples.len(),
        failed.len(),
        seconds / 2
    );
    let mut upward = Vec::new();
    for (name, value, factor, plus) in series {
        let (a, b) = (med(first, value), med(last, value));
        let _ = write!(report, " {name} {a:.1}->{b:.1}");
        if b > a * factor + plus {
            upward.push(format!(
                "{name}: first third median {a:.1}, last third {b:.1} (allowed {:.1})",
                a * factor + plus
            ));
        }
    }
    let (first_row, last_row) = (&rows[0], &rows[rows.len() - 1]);
    let _ = write!(
        report,
        "; start->end rss_kib authz {}->{} gateway {}->{} fds authz {}->{} gateway {}->{}",
        first_row.authz_rss,
        last_row.authz_rss,
        first_row.gateway_rss,
        last_row.gateway_rss,
        first_row.authz_fds,
        last_row.authz_fds,
        first_row.gateway_fds,
        last_row.gateway_fds
    );
    println!("{report}");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failed.len(),
        samples.len(),
        failed
            .iter()
            .take(3)
            .map(|s| (KINDS[s.worker % KINDS.len()], &s.value))
            .collect::<Vec<_>>()
    );
    assert!(upward.is_empty(), "upward trend: {upward:#?}");
    assert!(
        rows.iter().all(|r| r.requests > 0),
        "a second without a single answer"
    );
}
