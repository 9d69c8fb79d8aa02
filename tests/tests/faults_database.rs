//! PostgreSQL stopped and started again under load, with the real `authz-server` binary and a
//! PostgreSQL of this test's own (`scripts/pg-throwaway`, under `AUTHZ_TEST_RUN_DIR`): checks
//! go over gRPC straight to the server, as Envoy sends them.
//!
//! - `/closed` (`on_error = "fail_closed"`): once the cached answer (1 s) has expired, every
//!   check is denied 503 / UNAVAILABLE within the lookup timeout, then allowed again once the
//!   database is back — without restarting anything;
//! - `/stale` (`on_error = { serve_stale_seconds = 60 }`): the key seen before the outage keeps
//!   being allowed, with the row's headers, throughout;
//! - a revoked key and an unknown key are never allowed, up or down.

use std::time::{Duration, Instant};

use e2e::load::{Load, Sample, quantile};
use e2e::procs::Process;
use extauthz_proto::v3::CheckRequest;
use extauthz_proto::v3::authorization_client::AuthorizationClient;
use extauthz_proto::v3::check_response::HttpResponse;
use testkit::{Throwaway, authz_keys, binaries, scratch_dir};
use tonic::transport::Channel;

const BY_HASH: &str =
    "SELECT subject, plan FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL";
/// The lookup timeout of both rules.
const LOOKUP_TIMEOUT: Duration = Duration::from_millis(300);

fn config(url: &str) -> String {
    let timeout = LOOKUP_TIMEOUT.as_millis();
    let mut text = format!(
        r#"
[databases.main]
url = "{url}"
pool_size = 4

[default]
deny = {{ status = 403, body = "no rule" }}
"#
    );
    for (name, on_error) in [
        ("closed", "\"fail_closed\""),
        ("stale", "{ serve_stale_seconds = 60 }"),
    ] {
        // A trailing space makes each rule's query its own (no answer shared between the rules).
        let query = if name == "stale" {
            format!("{BY_HASH} ")
        } else {
            BY_HASH.to_owned()
        };
        text.push_str(&format!(
            r#"
[[rules]]
name = "{name}"
when = {{ path = {{ prefix = "/{name}" }} }}
credential = {{ from = {{ header = "x-ai-api-key" }} }}
allow = {{ request_headers = [{{ name = "x-user-id", value = "{{{{db.subject}}}}" }}, {{ name = "x-plan", value = "{{{{db.plan}}}}" }}] }}
[rules.lookup]
database = "main"
query = "{query}"
params = [{{ credential = "sha256" }}]
cache_ttl_seconds = 1
negative_ttl_seconds = 1
timeout_ms = {timeout}
on_error = {on_error}
on_missing = {{ status = 403, body = "unknown key" }}
"#
        ));
    }
    text
}

/// What one check decided.
#[derive(Debug, Clone, PartialEq)]
enum Decision {
    Allowed {
        user: String,
        plan: String,
    },
    Denied {
        code: i32,
        status: i32,
        body: String,
    },
    Failed(String),
}

fn check_request(path: &str, key: &str) -> CheckRequest {
    let mut check = e2e::v3_check(&[("x-ai-api-key", key)], "");
    if let Some(http) = check
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.path = path.to_owned();
    }
    check
}

async fn decide(client: &mut AuthorizationClient<Channel>, path: &str, key: &str) -> Decision {
    let call = client.check(check_request(path, key));
    let response = match tokio::time::timeout(Duration::from_secs(10), call).await {
        Err(_) => return Decision::Failed("no answer in 10 s".into()),
        Ok(Err(status)) => return Decision::Failed(format!("{status:?}")),
        Ok(Ok(response)) => response.into_inner(),
    };
    let code = response.status.map(|s| s.code).unwrap_or_default();
    match response.http_response {
        Some(HttpResponse::OkResponse(ok)) if code == 0 => {
            let headers = e2e::v3_headers(&ok.headers);
            let get = |name: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            Decision::Allowed {
                user: get("x-user-id"),
                plan: get("x-plan"),
            }
        }
        Some(HttpResponse::DeniedResponse(denied)) => Decision::Denied {
            code,
            status: denied.status.map(|s| s.code).unwrap_or_default(),
            body: denied.body,
        },
        other => Decision::Failed(format!("code {code}, {other:?}")),
    }
}

/// Worker kinds: (path, which key).
const KINDS: [(&str, &str); 4] = [
    ("/closed", "alice"),
    ("/stale", "alice"),
    ("/closed", "revoked"),
    ("/stale", "unknown"),
];

fn alice() -> Decision {
    Decision::Allowed {
        user: "alice".into(),
        plan: "pro".into(),
    }
}

fn unavailable() -> Decision {
    Decision::Denied {
        code: 14,
        status: 503,
        body: String::new(),
    }
}

fn unknown_key() -> Decision {
    Decision::Denied {
        code: 7,
        status: 403,
        body: "unknown key".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_restarted_under_load() {
    let test = "postgres_stopped_and_restarted_under_load";
    let Some([authz_bin]) = binaries(test, ["authz-server"]) else {
        return;
    };
    let Some(pg) = Throwaway::start(test) else {
        return;
    };
    let url = pg.url.clone();
    authz_keys(&authz_bin, &["init", "--database", &url]);
    let alice_key = authz_keys(
        &authz_bin,
        &[
            "add",
            "--database",
            &url,
            "--subject",
            "alice",
            "--plan",
            "pro",
        ],
    );
    let revoked_key = authz_keys(
        &authz_bin,
        &["add", "--database", &url, "--subject", "mallory"],
    );
    authz_keys(
        &authz_bin,
        &["revoke", "--database", &url, "--subject", "mallory"],
    );

    let dir = scratch_dir("fault-postgres");
    let config_file = dir.join("authz.toml");
    std::fs::write(&config_file, config(&url)).expect("writes the config");
    let authz = Process::start(
        &authz_bin,
        &[
            "--grpc-addr".into(),
            "127.0.0.1:0".into(),
            "--config".into(),
            config_file.display().to_string(),
        ],
        &["grpc"],
        &dir.join("authz.stderr.log"),
    );
    let client = e2e::v3_client(authz.address("grpc")).await;
    // Two workers per kind. While the database is down a lookup waits out its timeout
    // (300 ms), so each worker then sends ~3 checks a second.
    let load = Load::start(KINDS.len() * 2, Duration::from_millis(10), move |worker| {
        let mut client = client.clone();
        let (path, who) = KINDS[worker % KINDS.len()];
        let key = match who {
            "alice" => alice_key.clone(),
            "revoked" => revoked_key.clone(),
            _ => "not-a-key-anyone-was-given".to_owned(),
        };
        async move { decide(&mut client, path, &key).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let halting = Instant::now();
    pg.halt();
    let halted = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let resuming = Instant::now();
    pg.resume();
    let resumed = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let samples = load.stop().await;
    drop(authz);

    let kind = |s: &Sample<Decision>| KINDS[s.worker % KINDS.len()];
    // Down for sure: PostgreSQL stopped and the cached answers (1 s) expired.
    let down = |s: &Sample<Decision>| {
        s.start >= halted + Duration::from_millis(1100) && s.end() <= resuming
    };
    let mut problems = Vec::new();
    let mut wrongly_allowed = 0;
    let mut lost = 0;
    let mut during = 0;
    for s in &samples {
        let (path, who) = kind(s);
        let d = &s.value;
        if matches!(d, Decision::Failed(_)) {
            lost += 1;
            problems.push(format!("{path} {who}: {d:?}"));
            continue;
        }
        if who != "alice" && matches!(d, Decision::Allowed { .. }) {
            wrongly_allowed += 1;
            problems.push(format!("{path} {who} allowed: {d:?}"));
        }
        let ok = match (path, who) {
            // Anything but alice's row or "unavailable" is wrong; in the outage only the latter.
            ("/closed", "alice") if down(s) => *d == unavailable(),
            ("/closed", "alice") => *d == alice() || *d == unavailable(),
            ("/stale", "alice") => *d == alice(),
            // Denied as unknown while up; as unknown (cached) or unavailable while down.
            _ => *d == unknown_key() || *d == unavailable(),
        };
        if down(s) {
            during += 1;
        }
        if !ok {
            problems.push(format!(
                "{path} {who} at {:?} after halt: {d:?}",
                s.start.saturating_duration_since(halted)
            ));
        }
    }
    // Back without a restart: the end of the last /closed answer that was not alice's row.
    let recovery = samples
        .iter()
        .filter(|s| kind(s) == ("/closed", "alice") && s.start >= resuming && s.value != alice())
        .map(|s| s.end().saturating_duration_since(resumed))
        .max()
        .unwrap_or_default();
    let allowed_after = samples
        .iter()
        .filter(|s| kind(s) == ("/closed", "alice") && s.start >= resumed + recovery)
        .filter(|s| s.value == alice())
        .count();
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.elapsed).collect();
    let p100 = quantile(&mut latencies, 1.0);
    println!(
        "FAULT postgres stopped+restarted: sent={} during_outage={during} lost={lost} wrongly_allowed={wrongly_allowed} \
         halt_took_ms={} resume_took_ms={} recovery_ms={} p100_ms={}",
        samples.len(),
        halted.duration_since(halting).as_millis(),
        resumed.duration_since(resuming).as_millis(),
        recovery.as_millis(),
        p100.as_millis(),
    );
    assert!(
        problems.is_empty(),
        "{} problems, e.g. {:#?}",
        problems.len(),
        &problems[..problems.len().min(5)]
    );
    assert!(
        during >= 40,
        "only {during} checks while the database was down"
    );
    assert!(
        recovery <= Duration::from_secs(3),
        "recovered after {recovery:?}"
    );
    assert!(
        allowed_after >= 50,
        "only {allowed_after} allowed after recovery"
    );
    // No check waits on a dead database longer than the lookup timeout (plus slack).
    assert!(
        p100 <= LOOKUP_TIMEOUT + Duration::from_millis(700),
        "a check took {p100:?}"
    );
}
