//! Gateway config text → validated `gateway::Config` (what `gateway` runs at start and on
//! reload). Any text either loads or is refused with `file:line:col` errors: never a panic, a
//! hang or unbounded memory.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if common::names_special_file(text) {
        return;
    }
    if let Err(error) = gateway::Config::from_toml(text, "fuzz/gateway.toml") {
        let message = error.to_string();
        assert!(
            message.contains("fuzz/gateway.toml:"),
            "an error that does not name its place: {message}"
        );
    }
});
