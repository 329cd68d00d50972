"""A grid tracked through a real ``mlflow server`` (SQLite backend, proxied artifacts), which drops mid-grid.

Workers log through the server only: artifacts are proxied (``--serve-artifacts``),
so no worker needs the artifact store's location or credentials. The server is
stopped for a few seconds while trials run; their tracking calls retry with
bounded backoff and the grid completes.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from raygrid.config.loader import load_grid
from raygrid.errors import TrackingError
from raygrid.grid.runner import run_grid
from raygrid.pipeline.cache import StageCache
from raygrid.tracking.store import GridTracker, resolve_tracking, retry
from tests.conftest import tiny_grid_document
from tests.grid.faulttools import audit, record_row, started_trials, write_grid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """An ``mlflow server`` on 127.0.0.1 with a SQLite backend and proxied artifacts, in its own process group."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port = folder, port
        self.db = folder / "server.db"
        self.artifacts = folder / "server-artifacts"
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                "--backend-store-uri", f"sqlite:///{self.db}", "--serve-artifacts",
                "--artifacts-destination", str(self.artifacts), "--workers", "1",
            ],
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("mlflow server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None


class DroppingProxy(threading.Thread):
    """A TCP proxy in front of the server that can drop it: closes every connection and refuses new ones.

    Restarting ``mlflow server`` costs 20 to 70 s on a loaded 2-core machine; the
    proxy gives the workers the same view (connections reset, then refused) for an
    exact few seconds. Set ``RAYGRID_TEST_REAL_RESTART=1`` to kill and restart the
    real server instead.
    """

    def __init__(self, target_port: int) -> None:
        super().__init__(daemon=True)
        self.target_port, self.port = target_port, free_port()
        self.up = threading.Event()
        self.up.set()
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self) -> None:
        while not self.closed.is_set():
            self.up.wait()
            listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
            listener.settimeout(0.1)
            while self.up.is_set() and not self.closed.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
                with self.lock:
                    self.sockets += [client, upstream]
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()
            listener.close()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def drop(self) -> None:
        self.up.clear()
        with self.lock:
            for s in self.sockets:
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.close()  # RST: the peer sees the connection reset
                except OSError:
                    pass
            self.sockets.clear()

    def restore(self) -> None:
        self.up.set()


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "local")
    # What GridTracker sets by default for a server, set here so the test leaves no trace.
    for name, value in {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}.items():
        monkeypatch.setenv(name, value)
    srv = MlflowServer(tmp_path, free_port())
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.slow
def test_a_grid_logs_through_a_server_that_drops_mid_grid(tmp_path, monkeypatch, server):
    monkeypatch.chdir(tmp_path)
    real_restart = os.environ.get("RAYGRID_TEST_REAL_RESTART") == "1"
    proxy = DroppingProxy(server.port)
    proxy.start()
    uri = server.uri if real_restart else proxy.uri
    doc = tiny_grid_document(name="served", tracking={"uri": uri, "retry_seconds": 60})
    doc["grid"] = {"attack": [{"name": "none"}, {"name": "fgsm", "eps": 8}]}
    grid = load_grid(write_grid(tmp_path, doc))
    outage: list[float] = []

    def drop() -> None:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            if started_trials(server.db):  # a coordinator is logging: drop the server under the workers
                down = time.monotonic()
                if real_restart:
                    server.stop()
                    time.sleep(5)
                    server.start()
                else:
                    proxy.drop()
                    time.sleep(5)
                    proxy.restore()
                outage.append(time.monotonic() - down)
                return
            time.sleep(0.1)

    dropper = threading.Thread(target=drop, daemon=True)
    dropper.start()
    start = time.perf_counter()
    outcome = run_grid(grid)
    seconds = time.perf_counter() - start
    dropper.join(timeout=120)
    proxy.closed.set()

    assert outage and outage[0] >= 5, "the server was never stopped mid-grid"
    assert outcome.failed == []
    tracker = GridTracker(resolve_tracking(server.uri))
    counts = audit(tracker, "served", [t.name for t in grid.trials], StageCache(tmp_path / ".raygrid"))
    assert counts["finished"] == len(grid.trials)
    assert (counts["duplicated"], counts["lost"], counts["split"], counts["corrupted"]) == (0, 0, 0, 0)
    # Artifacts went through the server into its own store: the runs only know the proxy URI.
    run = next(r for r in tracker.client.search_runs([tracker.experiment_id("served", create=False)]) if r.data.tags.get("raygrid.grid_key") == "fgsm_eps8")
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert list(server.artifacts.rglob("adversarial_images.npz"))
    assert not (tmp_path / "mlruns").exists()  # nothing tracked locally
    how = "kill and restart the MLflow server" if real_restart else "drop the MLflow server (connections reset, then refused)"
    record_row(f"{how}: {outage[0]:.0f} s outage mid-grid", 1, counts, len(grid.trials), seconds)


def test_retry_rides_out_an_outage_and_gives_up_with_one_line_after_its_bound():
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionError("Connection refused")
        return "ok"

    assert retry(flaky, what="logging", seconds=5, first_delay=0.01) == "ok"

    def down() -> None:
        raise ConnectionError("Max retries exceeded: Connection refused")

    start = time.monotonic()
    with pytest.raises(TrackingError, match=r"did not answer for 0.5 s while logging metrics .*raygrid resume"):
        retry(down, what="logging metrics", seconds=0.5, first_delay=0.05)
    assert time.monotonic() - start < 2

    def refused() -> None:
        raise ValueError("INVALID_PARAMETER_VALUE: bad metric")

    with pytest.raises(ValueError):  # a refused request is not retried
        retry(refused, what="logging", seconds=5)


def test_a_server_down_at_start_refuses_the_grid_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc = tiny_grid_document(name="nosrv", tracking={"uri": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(TrackingError, match="is unreachable.*start it or fix tracking.uri"):
        run_grid(load_grid(write_grid(tmp_path, doc)))
    assert not (tmp_path / ".raygrid").exists()
