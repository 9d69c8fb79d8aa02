//! Hot reload sees a Kubernetes ConfigMap update. The kubelet never writes the mounted file in
//! place: it writes a new timestamped directory and swaps the `..data` symlink to it, so the path
//! the server watches (`rules.toml -> ..data/rules.toml`) suddenly resolves to another file. Here
//! the new file has the same size and the same modification time as the old one (a copy that
//! keeps times), so only its identity tells the change apart.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_authz-server");

fn rules(version: u8) -> String {
    format!("[default]\ndeny = {{ status = 403, body = \"rules-v{version}\" }}\n")
}

/// The HTTP mode's answer body: which rules are in force.
fn body(address: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("connects");
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .expect("writes");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("reads");
    reply
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Lays out a ConfigMap volume as the kubelet does, with `version` in `..<dir>`.
fn write_version(volume: &Path, dir: &str, version: u8) {
    let data = volume.join(dir);
    std::fs::create_dir(&data).expect("creates the data directory");
    std::fs::write(data.join("rules.toml"), rules(version)).expect("writes");
}

/// The kubelet's atomic swap: a new `..data_tmp` symlink renamed over `..data`.
fn point_data_at(volume: &Path, dir: &str) {
    let tmp = volume.join("..data_tmp");
    symlink(dir, &tmp).expect("symlink");
    std::fs::rename(&tmp, volume.join("..data")).expect("rename over ..data");
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_configmap_symlink_swap_is_reloaded_even_with_the_same_size_and_mtime() {
    let volume = std::env::temp_dir().join(format!("authz-configmap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&volume);
    std::fs::create_dir_all(&volume).expect("creates the volume");
    write_version(&volume, "..2026_12_02_10_00_00.1", 1);
    point_data_at(&volume, "..2026_12_02_10_00_00.1");
    symlink("..data/rules.toml", volume.join("rules.toml")).expect("symlink");

    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(volume.join("rules.toml"))
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let server = Server(child);
    let address = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("listening http ").map(str::to_owned))
        .expect("announces the HTTP port");
    assert_eq!(body(&address), "rules-v1");

    // The new version: same length, and given the old file's modification time.
    write_version(&volume, "..2026_12_02_10_05_00.2", 2);
    let old = volume.join("..2026_12_02_10_00_00.1/rules.toml");
    let new = volume.join("..2026_12_02_10_05_00.2/rules.toml");
    let mtime = std::fs::metadata(&old)
        .and_then(|m| m.modified())
        .expect("mtime");
    std::fs::File::options()
        .write(true)
        .open(&new)
        .and_then(|f| f.set_modified(mtime))
        .expect("sets the mtime");
    assert_eq!(
        std::fs::metadata(&old)
            .map(|m| (m.len(), m.modified().ok()))
            .ok(),
        std::fs::metadata(&new)
            .map(|m| (m.len(), m.modified().ok()))
            .ok(),
        "the two versions look alike by size and mtime"
    );
    point_data_at(&volume, "..2026_12_02_10_05_00.2");
    // The kubelet then removes the old directory.
    std::fs::remove_dir_all(volume.join("..2026_12_02_10_00_00.1")).expect("removes the old one");

    // Polled every second: give it a few.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = body(&address);
    while seen != "rules-v2" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        seen = body(&address);
    }
    assert_eq!(seen, "rules-v2", "the swapped-in rules are in force");
    drop(server);
    let _ = std::fs::remove_dir_all(&volume);
}
