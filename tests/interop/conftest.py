"""Shared fixtures for the interop suites: run the real `authz-server` binary on OS-chosen loopback ports.

The binary is built by `scripts/test` before pytest runs. Set AUTHZ_SERVER_BIN to test another build.

Preconditions: a test that cannot run (a tool not installed, a package missing) calls `pytest.skip`
with the reason, at module level with `allow_module_level=True`. Under AUTHZ_TEST_STRICT=1 (set by
`scripts/test`) the two hooks below turn every skip, of a test or of a whole module, into a failure
naming that reason, so a green run means every test ran. This is the one place strictness lives.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import grpc
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
SERVER_BIN = Path(os.environ.get("AUTHZ_SERVER_BIN", TARGET_DIR / "debug" / "authz-server"))

STRICT = os.environ.get("AUTHZ_TEST_STRICT", "") not in ("", "0")

STARTUP_TIMEOUT_S = 20.0
LISTENING_RE = re.compile(r"^listening (grpc|http) (127\.0\.0\.1:\d+)\s*$")


@dataclass
class RunningServer:
    """One `authz-server` process and the addresses it announced on stdout."""

    process: subprocess.Popen
    grpc_addr: str
    http_addr: str
    stderr_path: Path
    stdout_lines: list = field(default_factory=list)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def assert_alive(self) -> None:
        """Fail with the server's stderr if it exited (e.g. panicked on the previous request)."""
        code = self.process.poll()
        if code is not None:
            pytest.fail(f"authz-server exited with {code}; stderr:\n{self.stderr()[-4000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def start_server(config: Optional[Path], workdir: Path) -> RunningServer:
    """Start the binary, wait for both `listening` lines, fail clearly (with stderr) if they don't come."""
    if not SERVER_BIN.is_file():
        pytest.fail(
            f"{SERVER_BIN} does not exist; build it first (scripts/test does: cargo build --workspace --bins)"
        )
    args = [str(SERVER_BIN), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]
    if config is not None:
        args += ["--config", str(config)]
    stderr_path = workdir / f"authz-server-{time.monotonic_ns()}.stderr"
    stderr_file = open(stderr_path, "wb")
    env = dict(os.environ)
    env.setdefault("RUST_BACKTRACE", "1")
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=stderr_file, stdin=subprocess.DEVNULL, env=env, cwd=REPO_ROOT
    )
    stderr_file.close()

    addrs: dict = {}
    lines: list = []
    both_seen = threading.Event()

    def drain_stdout() -> None:
        # Keep reading after startup so the server never blocks on a full stdout pipe.
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            lines.append(line)
            m = LISTENING_RE.match(line)
            if m:
                addrs.setdefault(m.group(1), m.group(2))
                if len(addrs) == 2:
                    both_seen.set()

    threading.Thread(target=drain_stdout, name="authz-server-stdout", daemon=True).start()

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not both_seen.wait(0.05):
        if process.poll() is not None or time.monotonic() > deadline:
            why = f"exited with {process.returncode}" if process.poll() is not None else (
                f"did not print both `listening grpc|http 127.0.0.1:PORT` lines within {STARTUP_TIMEOUT_S:.0f}s"
            )
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
            time.sleep(0.1)  # let the reader thread collect the last lines
            pytest.fail(
                f"authz-server {why}\ncommand: {' '.join(args)}\nstdout:\n"
                + "\n".join(lines[-50:])
                + f"\nstderr:\n{stderr_path.read_text(errors='replace')[-4000:]}"
            )

    return RunningServer(process, addrs["grpc"], addrs["http"], stderr_path, lines)


@pytest.fixture(scope="session")
def run_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="authz-interop-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def server(run_dir: Path) -> Iterator[RunningServer]:
    """The server with its built-in default (Istio ext-authz parity) configuration, shared by the session."""
    srv = start_server(None, run_dir)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def server_factory(run_dir: Path):
    """Start extra servers (e.g. with `--config FILE`); each is killed at the end of the test."""
    started: list = []

    def start(config: Optional[Path] = None) -> RunningServer:
        srv = start_server(config, run_dir)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture(scope="session")
def grpc_channel(server: RunningServer) -> Iterator[grpc.Channel]:
    channel = grpc.insecure_channel(server.grpc_addr)
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield channel
    finally:
        channel.close()


@pytest.fixture(autouse=True)
def _server_still_alive(request):
    """After every test that used the shared server, check it did not die (a crash must not hide)."""
    yield
    if "server" in request.fixturenames:
        request.getfixturevalue("server").assert_alive()


def _skip_reason(longrepr) -> str:
    # A skip's longrepr is (file, line, "Skipped: reason").
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def _fail_if_strict(report) -> None:
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = (
            f"{_skip_reason(report.longrepr)} - under AUTHZ_TEST_STRICT=1 (set by scripts/test) "
            "a test that cannot run fails"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skipped test (pytest.skip, skipif) fails under AUTHZ_TEST_STRICT=1."""
    outcome = yield
    _fail_if_strict(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A module skipped at import (pytest.skip(..., allow_module_level=True)) fails under AUTHZ_TEST_STRICT=1."""
    outcome = yield
    _fail_if_strict(outcome.get_result())
