//! The real binaries as processes, for the fault and soak suites (found with
//! `testkit::binaries`): started on loopback ports, read for their `listening KIND ADDR` lines, killed on
//! drop; and what `/proc` says about them (open descriptors, resident memory, TCP connections).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a debug binary gets to print its listening lines.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running binary, killed (SIGKILL) on drop if still alive.
pub struct Process {
    child: Child,
    /// The addresses it printed, by kind (`grpc`, `http`, `admin`); repeated kinds get `kind#2`...
    pub addresses: HashMap<String, SocketAddr>,
    /// Where its stderr goes.
    pub stderr: PathBuf,
}

impl Process {
    /// Starts `program args` and waits for `kinds` listening lines (in any order). Its stderr goes
    /// to `log` (read back into panic messages).
    pub fn start(program: &Path, args: &[String], kinds: &[&str], log: &Path) -> Process {
        let mut child = Command::new(program)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("FAULTS_RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("creates the stderr log"))
            .spawn()
            .unwrap_or_else(|e| panic!("starts {}: {e}", program.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    // Nobody listens any more; keep draining so the child never blocks on stdout.
                    continue;
                }
            }
        });
        let mut addresses = HashMap::new();
        let mut wanted: Vec<&str> = kinds.to_vec();
        while !wanted.is_empty() {
            let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "{} printed no `listening` line within {START_TIMEOUT:?}; stderr:\n{}",
                    program.display(),
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            });
            let Some(rest) = line.strip_prefix("listening ") else {
                continue;
            };
            let (kind, address) = rest.split_once(' ').expect("listening KIND ADDR");
            let address: SocketAddr = address.parse().expect("a socket address");
            let mut key = kind.to_owned();
            let mut n = 2;
            while addresses.contains_key(&key) {
                key = format!("{kind}#{n}");
                n += 1;
            }
            if let Some(at) = wanted.iter().position(|w| *w == key) {
                wanted.remove(at);
            }
            addresses.insert(key, address);
        }
        Process {
            child,
            addresses,
            stderr: log.to_path_buf(),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address printed for `kind`.
    pub fn address(&self, kind: &str) -> SocketAddr {
        *self
            .addresses
            .get(kind)
            .unwrap_or_else(|| panic!("no `listening {kind}` line: {:?}", self.addresses))
    }

    /// SIGKILL, and waits until it is gone (the kernel has closed its sockets).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`HUP`, `TERM`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("runs kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What it wrote on stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts the `gateway` binary at `program` on `config`, written to `dir/gateway.toml`; its
/// stderr goes to `dir/gateway.stderr.log`. Waits for its `listening http` line.
pub fn start_gateway(program: &Path, dir: &Path, config: &str) -> Process {
    let file = dir.join("gateway.toml");
    std::fs::write(&file, config).expect("writes the gateway config");
    Process::start(
        program,
        &["run".into(), "--config".into(), file.display().to_string()],
        &["http"],
        &dir.join("gateway.stderr.log"),
    )
}

/// The TCP sockets held by `pid` whose remote port is `port`, by state as `/proc/net/tcp` names
/// it (`01` ESTABLISHED, `08` CLOSE_WAIT, ...): its sockets in `/proc/PID/fd` matched by inode
/// against `/proc/net/tcp` and `tcp6`. A socket whose peer went away and that the process never
/// closed stays in CLOSE_WAIT: that is a leak.
pub fn sockets_to(pid: u32, port: u16) -> Vec<String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let link = std::fs::read_link(entry.path()).ok()?;
            let link = link.to_str()?;
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut states = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(remote), Some(state), Some(inode)) =
                (fields.get(2), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let remote_port = remote
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if remote_port == Some(port) && inodes.iter().any(|i| i == inode) {
                states.push((*state).to_owned());
            }
        }
    }
    states
}
