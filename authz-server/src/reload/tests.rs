use super::*;

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("authz-server-reload-unit");
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(format!("{name}-{}", std::process::id()));
    std::fs::write(&path, text).expect("writes");
    path
}

fn watched(path: &Path, loaded: &str, stamp: Option<Stamp>) -> Watched {
    Watched {
        path: path.to_path_buf(),
        loaded: Some(rules::digest(loaded.as_bytes())),
        stamp,
    }
}

#[test]
fn a_stamp_taken_within_the_racy_window_does_not_vouch_for_the_content() {
    let path = temp_file("racy", "allow = 1");
    // The stamp equals the file's, but it was taken just after a write: the same stamp may
    // hold other bytes, so the file is hashed and the difference seen.
    let fresh = Stamp::now(&path);
    assert!(fresh.is_some_and(|stamp| !stamp.trusted()));
    assert!(!watched(&path, "allow = 2", fresh).unchanged());
    assert!(watched(&path, "allow = 1", fresh).unchanged());
}

#[test]
fn an_old_equal_stamp_is_trusted_without_reading_the_file() {
    let path = temp_file("trusted", "allow = 1");
    let old = Stamp::now(&path).map(|stamp| Stamp {
        taken: stamp.taken + RACY_WINDOW * 2,
        ..stamp
    });
    assert!(old.is_some_and(|stamp| stamp.trusted()));
    // "allow = 2" was not what is on disk: a trusted stamp is not second-guessed (which is
    // why a stamp is only ever recorded with a read that matched).
    assert!(watched(&path, "allow = 2", old).unchanged());
}

#[test]
fn a_stamp_is_recorded_only_when_the_content_matches() {
    let path = temp_file("record", "allow = 1");
    let mut stale = watched(&path, "allow = 0", None);
    assert!(!stale.unchanged());
    assert!(stale.stamp.is_none(), "a mismatch records no stamp");
    let mut same = watched(&path, "allow = 1", None);
    assert!(same.unchanged());
    assert!(same.stamp.is_some());
}

#[test]
fn a_file_missing_at_load_is_a_change_once_it_appears() {
    let path = temp_file("appears", "x");
    std::fs::remove_file(&path).expect("removes");
    let mut missing = Watched {
        path: path.clone(),
        loaded: None,
        stamp: None,
    };
    assert!(missing.unchanged());
    std::fs::write(&path, "x").expect("writes");
    assert!(!missing.unchanged());
}
