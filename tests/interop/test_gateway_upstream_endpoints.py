"""Several endpoints behind one backend: load balancing, a replica killed and one slowed under load,
retries, outlier ejection and return, all seen from outside (the answers and the admin /metrics).

The replicas are `named_backend.py` processes (Python's http.server) that answer with their name, so
every answer says which endpoint served it. The load is plain `http.client` threads on keep-alive
connections to the gateway.
"""

from __future__ import annotations

import http.client
import json
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import pytest

from gateway_support import start_gateway, start_process, write_config
from upstream_support import closed_port, metric, metric_lines, scrape

NAMED_BACKEND = Path(__file__).resolve().parent / "named_backend.py"
NAMES = ("a", "b", "c")


def start_replica(workdir: Path, name: str, port: int = 0):
    return start_process(f"replica-{name}", [sys.executable, str(NAMED_BACKEND), name, str(port)], workdir,
                         {"http": 1})


@pytest.fixture
def workdir():
    with tempfile.TemporaryDirectory(prefix="upstream-endpoints-") as d:
        yield Path(d)


@pytest.fixture
def replicas(workdir):
    """Three replicas a, b, c by name; a test may kill and restart them (all stopped at the end)."""
    procs = {name: start_replica(workdir, name) for name in NAMES}
    yield procs
    for proc in procs.values():
        proc.stop()


def pool_config(endpoints: List[str], extra_backend: str = "", extra_route: str = "") -> str:
    urls = ", ".join(f'"http://{e}"' for e in endpoints)
    return f"""
[[listeners]]
name = "main"
address = "127.0.0.1:0"

[[backends]]
name = "pool"
endpoints = [{urls}]
connect_timeout = "1s"
{extra_backend}

[[routes]]
name = "pool"
path = {{ prefix = "/" }}
backend = "pool"
timeout = "5s"
{extra_route}
"""


@pytest.fixture
def gateway(workdir):
    started = []

    def start(config_text: str):
        proc = start_gateway(workdir, write_config(workdir, "gateway-pool", config_text), admin=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.assert_alive()
        proc.stop()


def get(gw, path="/work") -> tuple[int, Optional[str], bytes]:
    """One GET through the gateway: (status, the replica that answered or None, body)."""
    host, port = gw.addr().rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    name = json.loads(body)["backend"] if resp.status == 200 else None
    return resp.status, name, body


@dataclass
class Answer:
    started: float
    status: int  # 0: the gateway's connection broke (no answer)
    backend: Optional[str]
    detail: str = ""


class Load:
    """`threads` clients, each sending GETs back to back on its own keep-alive connection to the gateway."""

    def __init__(self, gw, threads: int):
        self.host, port = gw.addr().rsplit(":", 1)
        self.port = int(port)
        self.answers: List[Answer] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)]
        for t in self.threads:
            t.start()

    def run(self, i: int) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        n = 0
        while not self.stopping.is_set():
            n += 1
            started = time.monotonic()
            try:
                conn.request("GET", f"/load/{i}/{n}")
                resp = conn.getresponse()
                body = resp.read()
                backend = json.loads(body)["backend"] if resp.status == 200 else None
                answer = Answer(started, resp.status, backend, "" if backend else body[:200].decode(errors="replace"))
            except (OSError, http.client.HTTPException) as e:
                answer = Answer(started, 0, None, repr(e))
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            with self.lock:
                self.answers.append(answer)
        conn.close()

    def stop(self) -> List[Answer]:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=15)
        return self.answers

    def since(self, t: float) -> List[Answer]:
        with self.lock:
            return [a for a in self.answers if a.started >= t]


def port_of(proc) -> int:
    return int(proc.addr().rsplit(":", 1)[1])


# --- load balancing -------------------------------------------------------------------------------------


def test_round_robin_takes_turns(gateway, replicas):
    gw = gateway(pool_config([p.addr() for p in replicas.values()], 'lb_policy = "round_robin"'))

    served = [get(gw)[1] for _ in range(30)]

    assert Counter(served) == {"a": 10, "b": 10, "c": 10}, served
    assert all(len(set(served[i:i + 3])) == 3 for i in range(0, 30, 3)), f"not in turns: {served}"


def test_default_policy_uses_every_endpoint(gateway, replicas):
    gw = gateway(pool_config([p.addr() for p in replicas.values()]))

    served = Counter(get(gw)[1] for _ in range(60))

    assert set(served) == set(NAMES) and min(served.values()) >= 6, served


def test_all_endpoints_down_is_503_at_once(gateway):
    gw = gateway(pool_config([f"127.0.0.1:{closed_port()}", f"127.0.0.1:{closed_port()}"],
                             "outlier_detection = { consecutive_connect_failures = 1, max_ejection_percent = 100 }"))

    bodies = []
    for _ in range(6):
        started = time.monotonic()
        status, _, body = get(gw)
        assert status == 503 and time.monotonic() - started < 2, (status, body)
        bodies.append(body)

    assert bodies[-1] == b"no healthy upstream", bodies


# --- faults under load ----------------------------------------------------------------------------------

RESILIENT = (
    'lb_policy = "round_robin"\n'
    'outlier_detection = { consecutive_connect_failures = 2, consecutive_5xx = 3, base_ejection_time = "2s", '
    "max_ejection_percent = 50 }"
)
RETRIES = 'retries = { attempts = 3, on = ["connect-failure", "reset", "503"] }'


def wait_for(what: str, condition, timeout_s: float, interval_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    pytest.fail(f"{what} did not happen within {timeout_s} s")


def test_killed_endpoint_loses_no_request_is_ejected_and_returns(workdir, gateway, replicas):
    gw = gateway(pool_config([p.addr() for p in replicas.values()], RESILIENT, RETRIES))
    b_port = port_of(replicas["b"])
    b_label = f"~127.0.0.1:{b_port}"

    load = Load(gw, threads=4)
    time.sleep(1.0)
    replicas["b"].popen.send_signal(signal.SIGKILL)
    replicas["b"].popen.wait(timeout=5)
    killed_at = time.monotonic()
    time.sleep(1.5)
    answers = load.stop()

    failed = [a for a in answers if a.status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed, e.g. {failed[:3]}"
    assert {"a", "b", "c"} <= {a.backend for a in answers if a.started < killed_at}
    after = Counter(a.backend for a in answers if a.started > killed_at + 0.2)
    assert set(after) == {"a", "c"} and sum(after.values()) >= 20, after

    samples = scrape(gw.addr("admin"))
    ejected = metric(samples, "gateway_upstream_endpoint_ejected", backend="pool", endpoint=b_label)
    ejections = metric(samples, "gateway_upstream_ejections_total", backend="pool", endpoint=b_label)
    assert ejected == 1 and ejections and ejections >= 1, metric_lines(samples, "gateway_upstream")
    retries = metric(samples, "gateway_upstream_retries_total", route="pool")
    assert retries and retries >= 1, metric_lines(samples, "gateway_upstream")
    others = [metric(samples, "gateway_upstream_endpoint_ejected", backend="pool", endpoint=f"~{p.addr()}")
              for n, p in replicas.items() if n != "b"]
    assert others == [0, 0], metric_lines(samples, "gateway_upstream")

    # b comes back on its port: after its ejection time it is used again and no longer counted ejected.
    replicas["b"] = start_replica(workdir, "b", b_port)
    wait_for("b answering through the gateway again", lambda: "b" in {get(gw)[1] for _ in range(6)}, 10)
    samples = scrape(gw.addr("admin"))
    assert metric(samples, "gateway_upstream_endpoint_ejected", backend="pool", endpoint=b_label) == 0, \
        metric_lines(samples, "gateway_upstream")


def control(replica, path: str) -> None:
    """Tell a replica directly (not through the gateway) how to answer from now on."""
    host, port = replica.addr().rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
    finally:
        conn.close()


def test_503s_are_retried_elsewhere_and_eject_the_endpoint(gateway, replicas):
    # An ejection outlasting the test, however slow the machine: the gauge is read at the end.
    resilient = RESILIENT.replace('base_ejection_time = "2s"', 'base_ejection_time = "60s"')
    gw = gateway(pool_config([p.addr() for p in replicas.values()], resilient, RETRIES))
    control(replicas["b"], "/__status?code=503")

    served = [get(gw) for _ in range(30)]

    assert [s for s in served if s[0] != 200] == []
    assert Counter(name for _, name, _ in served).keys() == {"a", "c"}
    samples = scrape(gw.addr("admin"))
    b_label = f"~{replicas['b'].addr()}"
    assert metric(samples, "gateway_upstream_endpoint_ejected", backend="pool", endpoint=b_label) == 1, \
        metric_lines(samples, "gateway_upstream")
    assert metric(samples, "gateway_upstream_ejections_total", backend="pool", endpoint=b_label) == 1, \
        metric_lines(samples, "gateway_upstream")
    retried = metric(samples, "gateway_upstream_retries_total", route="pool")
    assert retried is not None and 1 <= retried <= 3, metric_lines(samples, "gateway_upstream")


def test_slow_endpoint_gets_less_traffic_within_seconds(gateway, replicas):
    gw = gateway(pool_config([p.addr() for p in replicas.values()]))

    load = Load(gw, threads=8)
    time.sleep(1.0)
    # A second per answer: under least request the slow replica keeps about as many requests in flight
    # as each fast one, so its share is (in flight / 1 s) over the total rate, far under a third.
    control(replicas["c"], "/__delay?ms=1000")
    slowed_at = time.monotonic()
    time.sleep(3.0)
    answers = load.stop()

    assert all(a.status == 200 for a in answers), [a for a in answers if a.status != 200][:3]
    before = Counter(a.backend for a in answers if a.started < slowed_at)
    assert min(before[n] for n in NAMES) >= 0.15 * sum(before.values()), f"uneven before the slowdown: {before}"
    # From one second after the slowdown on, the slow replica's share of new requests is small.
    shifted = Counter(a.backend for a in answers if a.started > slowed_at + 1.0)
    total = sum(shifted.values())
    assert total >= 50, shifted
    assert shifted["c"] <= 0.15 * total, f"the slow replica still got {shifted['c']} of {total}: {shifted}"
