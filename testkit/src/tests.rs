use std::ffi::OsStr;

use super::{skip_under, strict_value};

#[test]
fn strict_means_set_and_not_zero() {
    assert!(!strict_value(None));
    assert!(!strict_value(Some(OsStr::new(""))));
    assert!(!strict_value(Some(OsStr::new("0"))));
    assert!(strict_value(Some(OsStr::new("1"))));
}

#[test]
fn a_missing_precondition_only_prints_when_not_strict() {
    skip_under(false, "demo", "the `frobnicator` tool is not installed");
}

#[test]
#[should_panic(
    expected = "SKIPPED demo: the `frobnicator` tool is not installed — under AUTHZ_TEST_STRICT=1"
)]
fn a_missing_precondition_fails_under_strict_naming_it() {
    skip_under(true, "demo", "the `frobnicator` tool is not installed");
}

#[test]
fn a_present_tool_is_found_and_a_missing_one_is_not() {
    assert!(super::find_tool("sh").is_some());
    assert!(super::find_tool("no-such-tool-anywhere").is_none());
}

/// The test binary runs itself with `AUTHZ_TEST_STRICT` set and unset: the public entry point
/// reads the variable, and a strict run fails with the precondition's name in the message.
#[test]
fn under_strict_a_missing_precondition_fails_the_test_naming_it() {
    const NAME: &str = "tests::under_strict_a_missing_precondition_fails_the_test_naming_it";
    if std::env::var_os("TESTKIT_CHILD").is_some() {
        // The child: a test whose precondition is missing.
        let found = super::precondition("child", None::<()>, || {
            "the `frobnicator` tool is not installed".into()
        });
        assert!(found.is_none());
        return;
    }
    let exe = std::env::current_exe().expect("the test executable");
    for (strict, fails) in [("1", true), ("0", false), ("", false)] {
        let output = std::process::Command::new(&exe)
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env("TESTKIT_CHILD", "1")
            .env(super::STRICT_VAR, strict)
            .output()
            .expect("runs the test executable");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            !output.status.success(),
            fails,
            "AUTHZ_TEST_STRICT={strict:?}:\n{text}"
        );
        assert!(
            text.contains("SKIPPED child: the `frobnicator` tool is not installed"),
            "AUTHZ_TEST_STRICT={strict:?}:\n{text}"
        );
        assert_eq!(
            text.contains("a test that cannot run fails"),
            fails,
            "{text}"
        );
    }
}

#[test]
fn wait_for_port_returns_once_something_listens() {
    let port = super::free_port();
    let address: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let listener = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let listener = std::net::TcpListener::bind(address).expect("the free port is still free");
        let _ = listener.accept();
    });
    super::wait_for_port(address, std::time::Duration::from_secs(5));
    listener.join().expect("the listener thread ends");
}

#[test]
#[should_panic(expected = "nothing listens on")]
fn wait_for_port_fails_naming_the_address_when_nothing_listens() {
    let address: std::net::SocketAddr = ([127, 0, 0, 1], super::free_port()).into();
    super::wait_for_port(address, std::time::Duration::from_millis(200));
}
