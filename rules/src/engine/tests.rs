//! Unit tests of the rule set: thread safety and logged paths.

#[test]
fn rule_set_is_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<crate::RuleSet>();
}

#[test]
fn logged_paths_hide_the_query_and_segments_a_lookup_binds() {
    let plain = crate::load::<toml::Table>("p.toml", "[default]\nallow = {}\n")
        .unwrap()
        .1;
    let request = |path: &str| crate::Request {
        path: path.to_owned(),
        ..crate::Request::default()
    };
    assert_eq!(
        plain.path_for_log(&request("/a/b?key=s3cret")),
        "/a/b?<redacted>"
    );
    assert_eq!(plain.path_for_log(&request("//a/../b")), "//a/../b");
    let keyed = r#"
[databases.main]
url = "sqlite::memory:"
[default]
deny = {}
[[rules]]
name = "key"
allow = {}
[rules.lookup]
database = "main"
query = "SELECT 1 FROM keys WHERE key = $1"
params = [{ path_segment = 2 }]
"#;
    let keyed = crate::load::<toml::Table>("p.toml", keyed).unwrap().1;
    assert_eq!(keyed.secret_path_segments(), [2]);
    assert_eq!(
        keyed.path_for_log(&request("/keys/s3cret/items?x=1")),
        "/keys/<redacted>/items?<redacted>"
    );
    // Counted as the lookup counts: on the canonical path.
    assert_eq!(
        keyed.path_for_log(&request("//keys/./s3cret")),
        "/keys/<redacted>"
    );
    assert_eq!(
        keyed.path_for_log(&request("/keys/s3cret%zz")),
        "<redacted>"
    );
}

/// The server awaits `evaluate` inside `Send` tasks.
#[test]
fn evaluate_future_is_send() {
    fn check<T: Send>(_: &T) {}
    let (_, rules) = crate::load::<toml::Table>("p.toml", "[default]\nallow = {}\n").unwrap();
    let request = crate::Request::default();
    let hooks = crate::Hooks::default();
    check(&rules.evaluate(&request, &hooks));
}
