"""Real processes for the gateway interop suites: `authz-server`, `demo-backend` and `gateway` from
target/debug, each on OS-chosen loopback ports, and the real `curl` binary as the client.

Every binary prints one `listening <kind> ADDR` line per listener on stdout; we read the addresses back
from there. Binaries are built beforehand (scripts/test runs `cargo build --workspace --bins`); set
GATEWAY_BIN, DEMO_BACKEND_BIN or AUTHZ_SERVER_BIN to test other builds.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
GATEWAY_BIN = Path(os.environ.get("GATEWAY_BIN", TARGET_DIR / "debug" / "gateway"))
DEMO_BACKEND_BIN = Path(os.environ.get("DEMO_BACKEND_BIN", TARGET_DIR / "debug" / "demo-backend"))
AUTHZ_SERVER_BIN = Path(os.environ.get("AUTHZ_SERVER_BIN", TARGET_DIR / "debug" / "authz-server"))

SEED_CONFIG = REPO_ROOT / "config" / "gateway.toml"

# The seed's request body and API key, byte for byte (shared/seed).
SEED_BODY = (
    '{ "model": "gpt-3.5-turbo", "messages": [ { "role": "system", "content": "You are a poetic assistant, '
    'skilled in explaining complex programming concepts with creative flair." }, { "role": "user", "content": '
    '"Write 5 sentences." } ] }'
)
SEED_API_KEY = "N2YwMDIxZTEtNGUzNS1jNzgzLTRkYjAtYjE2YzRkZGVmNjcy"

STARTUP_TIMEOUT_S = 20.0
CURL_TIMEOUT_S = 20.0
LISTENING_RE = re.compile(r"^listening (\w+) (\S+)\s*$")


# --- processes ----------------------------------------------------------------------------------------


@dataclass
class Process:
    """One running binary and the `listening` addresses it announced, by kind (`http`, `grpc`)."""

    name: str
    args: List[str]
    popen: subprocess.Popen
    stderr_path: Path
    listening: Dict[str, List[str]] = field(default_factory=dict)
    stdout_lines: List[str] = field(default_factory=list)

    def addr(self, kind: str = "http") -> str:
        return self.listening[kind][0]

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def assert_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            pytest.fail(f"{self.name} exited with {code}; stderr:\n{self.stderr()[-4000:]}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=10)


def start_process(
    name: str, args: Sequence[str], workdir: Path, want: Dict[str, int], env: Optional[Dict[str, str]] = None
) -> Process:
    """Start `args`, wait until it printed `want[kind]` listening lines of each kind; fail with its stderr.

    `env` is added to this process's environment (e.g. a `${VAR}` the gateway's config reads)."""
    binary = Path(args[0])
    if not binary.is_file():
        pytest.fail(f"{binary} does not exist; build it first: cargo build --workspace --bins")
    stderr_path = workdir / f"{name}-{time.monotonic_ns()}.stderr"
    with open(stderr_path, "wb") as stderr_file:
        child_env = dict(os.environ)
        child_env.setdefault("RUST_BACKTRACE", "1")
        child_env.update(env or {})
        popen = subprocess.Popen(
            list(args), stdout=subprocess.PIPE, stderr=stderr_file, stdin=subprocess.DEVNULL, env=child_env,
            cwd=REPO_ROOT,
        )
    proc = Process(name, list(args), popen, stderr_path)
    ready = threading.Event()

    def drain_stdout() -> None:
        # Keep reading after startup so the process never blocks on a full stdout pipe.
        for raw in popen.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            proc.stdout_lines.append(line)
            m = LISTENING_RE.match(line)
            if m:
                proc.listening.setdefault(m.group(1), []).append(m.group(2))
                if all(len(proc.listening.get(k, [])) >= n for k, n in want.items()):
                    ready.set()

    threading.Thread(target=drain_stdout, name=f"{name}-stdout", daemon=True).start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not ready.wait(0.05):
        if popen.poll() is not None or time.monotonic() > deadline:
            why = f"exited with {popen.returncode}" if popen.poll() is not None else "printed no listening line"
            proc.stop()
            time.sleep(0.1)  # let the reader thread collect the last lines
            pytest.fail(
                f"{name} {why}\ncommand: {' '.join(args)}\nstdout:\n" + "\n".join(proc.stdout_lines[-50:])
                + f"\nstderr:\n{proc.stderr()[-4000:]}"
            )
    return proc


def start_authz_server(workdir: Path, config: Optional[Path] = None) -> Process:
    """`authz-server` (built-in Istio-compatible default unless `config`), gRPC and HTTP on port 0."""
    args = [str(AUTHZ_SERVER_BIN), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]
    if config is not None:
        args += ["--config", str(config)]
    return start_process("authz-server", args, workdir, {"grpc": 1, "http": 1})


def start_demo_backend(workdir: Path, sse_delay_ms: int = 100) -> Process:
    args = [str(DEMO_BACKEND_BIN), "--listen", "127.0.0.1:0", "--sse-delay-ms", str(sse_delay_ms)]
    return start_process("demo-backend", args, workdir, {"http": 1})


def start_gateway(
    workdir: Path,
    config: Path,
    backend_urls: Optional[Dict[str, str]] = None,
    authz_urls: Optional[Dict[str, str]] = None,
    *,
    admin: bool = False,
    env: Optional[Dict[str, str]] = None,
) -> Process:
    """`gateway run --config FILE` with its first listener on 127.0.0.1:0 and the given URL overrides;
    `admin`: the admin endpoint on 127.0.0.1:0 too (`proc.addr("admin")`); `env`: added environment."""
    args = [str(GATEWAY_BIN), "run", "--config", str(config), "--listen", "127.0.0.1:0"]
    for name, url in (backend_urls or {}).items():
        args += ["--backend-url", f"{name}={url}"]
    for name, url in (authz_urls or {}).items():
        args += ["--authz-url", f"{name}={url}"]
    want = {"http": 1}
    if admin:
        args += ["--admin", "127.0.0.1:0"]
        want["admin"] = 1
    return start_process("gateway", args, workdir, want, env)


# --- configs ------------------------------------------------------------------------------------------


def seed_config_text() -> str:
    return SEED_CONFIG.read_text()


def seed_config_without_policies() -> str:
    """config/gateway.toml minus its `[[policies]]` block: exactly what docs/gateway.md's
    `sed '/^\\[\\[policies\\]\\]/,$d' config/gateway.toml` produces (from the first such line to the end)."""
    lines = seed_config_text().splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith("[[policies]]")]
    assert starts, f"{SEED_CONFIG} has no [[policies]] entry"
    return "".join(lines[: starts[0]])


def write_config(workdir: Path, name: str, text: str) -> Path:
    path = workdir / f"{name}-{time.monotonic_ns()}.toml"
    path.write_text(text)
    return path


# --- the client: real curl ----------------------------------------------------------------------------

CURL = shutil.which("curl")


@dataclass
class Response:
    """What the client saw: status line, header lines in order (names lower-cased), body bytes."""

    http_version: str
    status: int
    reason: str
    headers: List[Tuple[str, str]]
    body: bytes
    local_port: Optional[int] = None
    elapsed_s: float = 0.0
    request_lines: List[str] = field(default_factory=list)

    def values(self, name: str) -> List[str]:
        return [v for k, v in self.headers if k == name.lower()]

    def header(self, name: str) -> Optional[str]:
        """The one value of `name`, None when absent; fails when the header came more than once."""
        vals = self.values(name)
        assert len(vals) <= 1, f"header {name!r} came {len(vals)} times: {vals}"
        return vals[0] if vals else None

    def names(self) -> List[str]:
        return [k for k, _ in self.headers]

    def text(self) -> str:
        return self.body.decode()

    def json(self):
        return json.loads(self.body)

    def echo(self) -> dict:
        """The demo backend's record of the request it received."""
        return self.json()["request"]

    def backend_saw(self, name: str) -> Optional[str]:
        """A request header as the demo backend received it (repeats joined with `, `), None if absent."""
        return self.echo()["headers"].get(name.lower())


def curl(
    url: str,
    *,
    headers: Sequence[str] = (),
    data: Optional[str] = None,
    method: Optional[str] = None,
    extra_args: Sequence[str] = (),
) -> Response:
    """Run `curl -v URL [-X METHOD] -H ... [-d DATA]` (the seed's shape), parse what `-v` shows.

    `headers` are curl `-H` arguments, exactly as typed (`content-type:application/json`); `extra_args`
    go after them (e.g. `--http2-prior-knowledge`; not supported by the http.client fallback).
    `--no-progress-meter` only keeps the progress meter out of the verbose trace we parse; `-w` writes the
    client's local port to stderr (for asserting `source.address`) and leaves the body untouched.
    """
    if CURL is None:
        if extra_args:
            # conftest turns this skip into a failure under AUTHZ_TEST_STRICT=1.
            pytest.skip(f"curl is not installed and http.client can't do {list(extra_args)}")
        return _http_client_fallback(url, headers, data, method)
    args = [CURL, "-v", url]
    if method is not None:
        args += ["-X", method]
    for h in headers:
        args += ["-H", h]
    if data is not None:
        args += ["-d", data]
    args += list(extra_args)
    args += ["--no-progress-meter", "-w", "%{stderr}\nLOCAL_PORT=%{local_port}\n"]
    start = time.monotonic()
    done = subprocess.run(args, capture_output=True, timeout=CURL_TIMEOUT_S)
    elapsed = time.monotonic() - start
    trace = done.stderr.decode(errors="replace")
    if done.returncode != 0:
        pytest.fail(f"curl exited with {done.returncode}: {' '.join(args)}\n{trace}")
    status_line, header_lines, request_lines, local_port = None, [], [], None
    for raw in trace.splitlines():
        line = raw.rstrip("\r")
        if line.startswith("> "):
            request_lines.append(line[2:])
        elif line.startswith("< "):
            content = line[2:]
            if content.startswith("HTTP/"):
                # A new response (e.g. after a 100 Continue) starts over.
                status_line, header_lines = content, []
            elif content:
                header_lines.append(content)
        elif line.startswith("LOCAL_PORT="):
            local_port = int(line.split("=", 1)[1])
    assert status_line is not None, f"no status line in curl's trace:\n{trace}"
    version, status, *reason = status_line.split(" ", 2)
    parsed = []
    for h in header_lines:
        name, _, value = h.partition(":")
        parsed.append((name.strip().lower(), value.strip()))
    return Response(version, int(status), reason[0] if reason else "", parsed, done.stdout, local_port, elapsed,
                    request_lines)


def _http_client_fallback(url, headers, data, method) -> Response:
    """Only for machines without curl: the same request through http.client."""
    hostport, _, path = url.removeprefix("http://").partition("/")
    host, _, port = hostport.partition(":")
    conn = http.client.HTTPConnection(host, int(port or 80), timeout=CURL_TIMEOUT_S)
    hdrs = [(n.strip(), v.strip()) for n, _, v in (h.partition(":") for h in headers)]
    body = data.encode() if data is not None else None
    if body is not None and not any(n.lower() == "content-type" for n, _ in hdrs):
        hdrs.append(("Content-Type", "application/x-www-form-urlencoded"))  # what curl -d sends
    start = time.monotonic()
    conn.putrequest(method or ("POST" if body is not None else "GET"), "/" + path, skip_accept_encoding=True)
    for n, v in hdrs:
        conn.putheader(n, v)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    local_port = conn.sock.getsockname()[1]
    resp = conn.getresponse()
    payload = resp.read()
    elapsed = time.monotonic() - start
    conn.close()
    version = "HTTP/1.1" if resp.version == 11 else "HTTP/1.0"
    return Response(version, resp.status, resp.reason, [(k.lower(), v) for k, v in resp.getheaders()], payload,
                    local_port, elapsed)
