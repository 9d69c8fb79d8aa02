//! Hot reload never loses an edit. Two races from issue 19, reproduced with a slow load (a large
//! Rego data file takes a debug build a good fraction of a second to parse and merge):
//!
//! - an edit that lands while a reload is loading is picked up by the next poll;
//! - a file read half-written (a plain `>` rewrite) is refused, and the finished file is loaded
//!   once it is complete — also when the rewrite kept its size and its modification time.
//!
//! The policy allows when `data.version == 2`; every other version denies (403), so "the edit is
//! in force" is a 200 from a real Check.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use authz_server::{Config, Metrics, RuleEngine};
use support::{Client, client, start_engine};

const POLICY: &str = "package envoy.authz\nimport rego.v1\ndefault allow := false\n\
                      allow if data.version == 2\n";

const CONFIG: &str = "[default]\ndeny = { status = 418 }\n\n[[rules]]\nname = \"opa\"\n\
                      rego = { files = [\"authz.rego\"], data = [\"data.json\"] }\n";

/// How often the reloader polls in these tests.
const POLL: Duration = Duration::from_millis(10);

/// A data document with `version` and about `filler` entries of ballast.
fn data(version: u32, filler: usize) -> String {
    let entries: Vec<String> = (0..filler)
        .map(|i| format!("{{\"id\":{i},\"name\":\"user-{i}\",\"roles\":[\"a\",\"b\"]}}"))
        .collect();
    format!(
        "{{\"version\":{version},\"users\":[{}]}}",
        entries.join(",")
    )
}

/// Writes `text` to `path` atomically (a new file renamed over it), as careful tools do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("writes");
    std::fs::rename(&tmp, path).expect("renames");
}

/// [`POLICY`] allowing another version (3): the same length, so it denies version 2.
fn denying() -> String {
    POLICY.replace("== 2\n", "== 3\n")
}

fn dir_with(test: &str, policy: &str, data_text: &str) -> PathBuf {
    let dir = support::temp_path(test);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("authz.rego"), policy).expect("writes");
    std::fs::write(dir.join("data.json"), data_text).expect("writes");
    std::fs::write(dir.join("rules.toml"), CONFIG).expect("writes");
    dir
}

/// Serves the config in `dir` with a reloader polling every [`POLL`]; the client and the
/// reloader's task.
async fn serve(dir: &Path) -> (support::Running, Client, tokio::task::JoinHandle<()>) {
    let path = dir.join("rules.toml");
    let loaded = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let listening = loaded.server.clone();
    let engine = RuleEngine::connect(loaded.rules, None).await;
    let metrics = Arc::new(Metrics::new());
    let reloader = authz_server::reload::Reloader::new(path, engine.clone(), metrics, listening)
        .loaded_from(loaded.files);
    let watching = tokio::spawn(reloader.run(POLL));
    let server = start_engine(engine).await;
    let client = client(&server).await;
    (server, client, watching)
}

/// How long one load of the config in `dir` takes now.
fn load_time(dir: &Path) -> Duration {
    let started = Instant::now();
    Config::load(&dir.join("rules.toml")).unwrap_or_else(|e| panic!("{e}"));
    started.elapsed()
}

/// Runs `edit` on a thread of its own, so its timing does not depend on the runtime the
/// reloader loads on; how long it took.
async fn edits(edit: impl FnOnce() + Send + 'static) -> Duration {
    let started = Instant::now();
    tokio::task::spawn_blocking(edit).await.expect("edits");
    started.elapsed()
}

/// Waits up to `within` for a Check to answer `status`; the last status seen.
async fn settles_on(client: &mut Client, status: u16, within: Duration) -> u16 {
    let deadline = Instant::now() + within;
    loop {
        let seen = support::check(client, "/", &[]).await.status;
        if seen == status || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// A multi-threaded runtime: the reloader loads on its own worker while the test edits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_made_while_a_reload_is_loading_is_applied_by_the_next_poll() {
    let dir = dir_with("reload-race-edit", POLICY, &data(1, 40_000));
    let load = load_time(&dir);
    assert!(
        load >= Duration::from_millis(150),
        "a slow load to race with: {load:?}"
    );
    let (_server, mut client, watching) = serve(&dir).await;
    assert_eq!(support::check(&mut client, "/", &[]).await.status, 403);

    // Version 1 again (a new file: a reload starts at the next poll); version 2 lands mid-load.
    let path = dir.join("data.json");
    let (first, second) = (data(1, 40_000), data(2, 10));
    let wrote_at = edits(move || {
        replace(&path, &first);
        std::thread::sleep(load / 3);
        replace(&path, &second);
    })
    .await;

    let status = settles_on(&mut client, 200, load * 4 + Duration::from_secs(2)).await;
    assert_eq!(
        status, 200,
        "version 2 (written {wrote_at:?} into a {load:?} load) is in force"
    );
    watching.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_policy_refused_mid_load_is_loaded_once_complete() {
    let dir = dir_with("reload-race-half", &denying(), &data(2, 40_000));
    let load = load_time(&dir);
    assert!(
        load >= Duration::from_millis(150),
        "a slow load to race with: {load:?}"
    );
    let (_server, mut client, watching) = serve(&dir).await;
    assert_eq!(support::check(&mut client, "/", &[]).await.status, 403);

    // A `>` rewrite of the policy read half-way: it does not parse, and the big data file keeps
    // the refused load busy while the writer finishes.
    let policy = dir.join("authz.rego");
    let wrote_at = edits(move || {
        std::fs::write(&policy, &POLICY[..POLICY.len() / 2]).expect("writes half");
        std::thread::sleep(load / 3);
        std::fs::write(&policy, POLICY).expect("writes the rest");
    })
    .await;
    eprintln!("DEBUG load {load:?} wrote {wrote_at:?}");

    let status = settles_on(&mut client, 200, load * 4 + Duration::from_secs(2)).await;
    assert_eq!(
        status, 200,
        "the completed policy (finished {wrote_at:?} into a {load:?} refused load) is in force"
    );
    watching.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_keeping_size_and_mtime_after_a_refused_load_is_loaded() {
    let dir = dir_with("reload-race-stamp", POLICY, &data(2, 10));
    let (_server, mut client, watching) = serve(&dir).await;
    assert_eq!(support::check(&mut client, "/", &[]).await.status, 200);

    // A broken policy of the same length as the good one is refused...
    let policy = dir.join("authz.rego");
    let broken = POLICY.replace("allow if", "allow !f");
    let denying = denying();
    assert_eq!(broken.len(), denying.len());
    std::fs::write(&policy, &broken).expect("writes");
    let stamp = std::fs::metadata(&policy)
        .and_then(|m| m.modified())
        .expect("mtime");
    tokio::time::sleep(POLL * 20).await;
    assert_eq!(support::check(&mut client, "/", &[]).await.status, 200);

    // ...then fixed in place within the same timestamp granule: same size, same mtime, same
    // inode. Only the content tells it apart.
    let mut file = std::fs::File::options()
        .write(true)
        .open(&policy)
        .expect("opens");
    std::io::Write::write_all(&mut file, denying.as_bytes()).expect("writes");
    file.set_modified(stamp).expect("sets mtime");
    drop(file);
    let status = settles_on(&mut client, 403, Duration::from_secs(4)).await;
    assert_eq!(
        status, 403,
        "the fixed policy (allow only version 3) is in force"
    );
    watching.abort();
}
