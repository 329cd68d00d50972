"""The storage root on a real S3 endpoint: a moto S3 server process on 127.0.0.1.

moto speaks the S3 HTTP API (signatures, multipart, listings) the way MinIO and
AWS do, so this exercises pyarrow's S3 filesystem end to end: the stage cache's
atomic entries, the storage check, Tune's state, and a whole grid run and its
resume from a bucket, with Ray workers that reach the endpoint through the
standard ``AWS_*`` variables only.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raygrid.pipeline import StageSpec, stage
from raygrid.pipeline.cache import StageCache, StorageError, check_storage, filesystem

pytestmark = pytest.mark.slow

BUCKET = "raygrid-test"


@stage("test_s3_value")
def _value(params, inputs, ctx):
    return {"n": params["n"], "payload": list(range(params["n"]))}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server in its own process, with one empty bucket; yields its URL."""
    pytest.importorskip("moto")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("the moto S3 server did not start")
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    """Point pyarrow (and Ray workers, which inherit the environment) at the server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    import pyarrow.fs as pafs

    # raygrid never creates buckets (a typo'd bucket must be an error); the test makes its own.
    admin = pafs.S3FileSystem(endpoint_override=s3_endpoint, allow_bucket_creation=True, region="us-east-1",
                              access_key="testing", secret_key="testing")
    if admin.get_file_info(BUCKET).type == pafs.FileType.NotFound:
        admin.create_dir(BUCKET)
    return s3_endpoint


def _keys(prefix: str) -> list[str]:
    import pyarrow.fs as pafs

    fs, path = filesystem(prefix)
    return [info.path for info in fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
            if info.type == pafs.FileType.File]


def test_the_stage_cache_keeps_atomic_entries_in_a_bucket(s3_env):
    root = f"s3://{BUCKET}/unit"
    check_storage(root)
    cache = StageCache(root)
    spec = StageSpec("test_s3_value", {"n": 5})
    assert not cache.is_local and not cache.exists(spec)
    where = cache.save(spec, {"n": 5, "payload": [0, 1, 2, 3, 4]}, 0.2)
    assert StageCache(root).load(spec) == {"n": 5, "payload": [0, 1, 2, 3, 4]}
    assert cache.entries() == [where]
    assert cache.read_record(where)["key"] == spec.key
    # Nothing but finished entries in the bucket: no temporary objects left behind.
    assert not [k for k in _keys(root) if k.endswith(".tmp") or "/.raygrid-" in k]


def test_a_missing_bucket_is_one_clear_line(s3_env):
    with pytest.raises(StorageError) as err:
        check_storage("s3://no-such-bucket-here/grids")
    assert "s3://no-such-bucket-here" in str(err.value) and "\n" not in str(err.value)


def test_a_grid_runs_and_resumes_with_its_storage_root_in_a_bucket(s3_env, tmp_path, monkeypatch):
    from raygrid.config.loader import load_grid
    from raygrid.grid.runner import run_grid
    from tests.conftest import tiny_grid_document
    from tests.grid.faulttools import audit, record_row, session_runs, write_grid

    monkeypatch.chdir(tmp_path)
    root = f"s3://{BUCKET}/grids"
    doc = tiny_grid_document(name="s3grid")
    doc["grid"] = {"attack": [{"name": "none"}, {"name": "fgsm", "eps": 8}]}
    doc["resources"] = {"trial": {"cpu": 1}, "attack": {"cpu": 1}}
    doc["storage"] = {"root": root}
    grid = load_grid(write_grid(tmp_path, doc))

    start = time.perf_counter()
    first = run_grid(grid)
    assert first.failed == [] and [r["status"] for r in first.trials] == ["FINISHED", "FINISHED"]
    assert sum(row["computed"] for row in first.stages) > 0
    keys = _keys(root)
    assert any("/cache/" in k for k in keys) and any("/tune/" in k for k in keys)
    assert not Path(tmp_path, ".raygrid").exists()  # nothing went to a local root instead

    tracker, _, runs = session_runs("mlruns", "s3grid", tmp_path)
    assert set(runs) == {t.name for t in grid.trials}
    counts = audit(tracker, "s3grid", [t.name for t in grid.trials], StageCache(root))
    assert (counts["finished"], counts["duplicated"], counts["lost"], counts["corrupted"]) == (2, 0, 0, 0)
    assert counts["entries"] > 0
    record_row("none: storage root in an S3 bucket (moto's S3 server)", 0, counts, len(grid.trials),
               time.perf_counter() - start)

    # A second session of the same grid is served entirely from the bucket.
    again = run_grid(grid)
    assert again.failed == []
    assert sum(row["computed"] for row in again.stages) == 0
