//! Server processes: started pinned to one CPU with one runtime worker, found by their
//! `listening KIND ADDR` lines, accounted by CPU time and peak RSS, killed when dropped.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a server gets to print its listening lines (debug builds start slowly).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The CPU every server runs on; the load generator gets [`LOAD_CPU`].
pub const SERVER_CPU: &str = "1";
/// The CPU of the load generator.
pub const LOAD_CPU: &str = "0";

/// A running server process.
pub struct Server {
    /// Its name in reports.
    pub name: String,
    /// Which binary it runs (`authz-server`, `gateway`, `floor`, `nginx`, ...).
    pub binary: String,
    child: Child,
    /// The addresses it printed, by kind (`grpc`, `http`).
    pub addresses: HashMap<String, SocketAddr>,
}

impl Drop for Server {
    /// SIGTERM first: nginx's master stops its worker only when asked (SIGKILL would orphan the
    /// worker); whatever has not exited after a second is killed.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `taskset` is there: pin with it. Without it the figures are still ratios, but unpinned.
pub fn can_pin() -> bool {
    Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A command for `program` pinned to `cpu` (when `taskset` exists).
pub fn pinned(cpu: &str, program: &Path, pin: bool) -> Command {
    if pin {
        let mut command = Command::new("taskset");
        command.arg("-c").arg(cpu).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// What to start.
pub struct Spec<'a> {
    /// Name in reports and of its log file.
    pub name: &'a str,
    /// The binary's path.
    pub program: &'a Path,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment (e.g. `RUST_LOG=off`).
    pub env: Vec<(&'a str, &'a str)>,
    /// The `listening KIND` lines to wait for; empty: wait for `ready_port` instead.
    pub listening: &'a [&'a str],
    /// A port to poll until it accepts (for servers that print nothing, like nginx).
    pub ready_port: Option<SocketAddr>,
}

/// Starts `spec` on [`SERVER_CPU`] with `TOKIO_WORKER_THREADS=1`, stderr to `<logs>/<name>.log`.
pub fn start(spec: &Spec<'_>, logs: &Path, pin: bool) -> anyhow::Result<Server> {
    let log_path = logs.join(format!("{}.log", spec.name));
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut command = pinned(SERVER_CPU, spec.program, pin);
    command
        .args(&spec.args)
        .env("TOKIO_WORKER_THREADS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    for (key, value) in &spec.env {
        command.env(key, value);
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", spec.program.display()))?;
    let binary = spec
        .program
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let stdout = child.stdout.take().context("no stdout")?;
    let mut server = Server {
        name: spec.name.to_owned(),
        binary,
        child,
        addresses: HashMap::new(),
    };
    // A reader thread keeps draining stdout, so a chatty server never blocks on a full pipe.
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    while spec
        .listening
        .iter()
        .any(|kind| !server.addresses.contains_key(*kind))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(line) => {
                let mut words = line.split_whitespace();
                if let (Some("listening"), Some(kind), Some(address)) =
                    (words.next(), words.next(), words.next())
                    && let Ok(address) = address.parse()
                {
                    server.addresses.insert(kind.to_owned(), address);
                }
            }
            Err(_) => bail!(
                "{} did not print its listening lines within {START_TIMEOUT:?}; see {}",
                spec.name,
                log_path.display()
            ),
        }
    }
    if let Some(port) = spec.ready_port {
        while TcpStream::connect_timeout(&port, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline || server.child.try_wait()?.is_some() {
                bail!(
                    "{} is not accepting on {port}; see {}",
                    spec.name,
                    log_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(server)
}

impl Server {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address it printed for `kind`.
    pub fn address(&self, kind: &str) -> anyhow::Result<SocketAddr> {
        self.addresses
            .get(kind)
            .copied()
            .with_context(|| format!("{} has no {kind} listener", self.name))
    }

    /// CPU seconds used so far by the process and its children (nginx's worker).
    pub fn cpu_seconds(&self) -> f64 {
        let pid = self.pid();
        let mut pids = vec![pid];
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
        pids.iter().map(|p| cpu_ticks(*p)).sum::<u64>() as f64 / ticks_per_second()
    }

    /// Peak resident set size (`VmHWM`) in KiB, of the process (or of its largest child).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let pid = self.pid();
        let mut pids = vec![pid];
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
        pids.iter().filter_map(|p| vm_hwm_kib(*p)).max()
    }
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")" come field 3 (state) onwards; utime is field 14, stime 15.
    let at = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    at(14) + at(15)
}

fn ticks_per_second() -> f64 {
    // USER_HZ is 100 on every Linux ABI this runs on; reading it needs libc's sysconf.
    100.0
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A loopback port free right now, for servers that cannot print an OS-chosen one (nginx).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}
