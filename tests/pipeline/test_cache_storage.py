"""Storage roots beyond a local folder: URIs through pyarrow.fs (the S3 code path), and unwritable roots."""

from __future__ import annotations

import errno

import pytest

from raygrid.pipeline import StageSpec, stage
from raygrid.pipeline.cache import StageCache, StorageError, check_storage, filesystem, resolve_root, storage_error


@stage("test_storage_value")
def _value(params, inputs, ctx):
    return {"n": params["n"]}


def spec(n: int = 1) -> StageSpec:
    return StageSpec("test_storage_value", {"n": n})


def test_a_uri_root_goes_through_pyarrow_fs_with_atomic_entries(tmp_path):
    # file:// takes the same code path as s3:// (pyarrow filesystem, temp object + move).
    cache = StageCache(f"file://{tmp_path}/root")
    assert not cache.is_local
    check_storage(cache.uri)
    assert not cache.exists(spec())
    where = cache.save(spec(), {"n": 1}, 0.1)
    assert cache.exists(spec()) and cache.load(spec()) == {"n": 1}
    assert cache.entries() == [where]
    assert cache.read_record(where)["key"] == spec().key
    assert not [p for p in (tmp_path / "root").rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".raygrid-")]


def test_an_injected_filesystem_stands_in_for_s3(tmp_path):
    import pyarrow.fs as pafs

    (tmp_path / "bucket").mkdir()
    bucket = pafs.SubTreeFileSystem(str(tmp_path / "bucket"), pafs.LocalFileSystem())
    cache = StageCache("grids/g1", fs=bucket)
    cache.save(spec(2), {"n": 2}, 0.0)
    assert (tmp_path / "bucket" / "grids" / "g1" / "cache" / "test_storage_value").is_dir()
    assert StageCache("grids/g1", fs=bucket).load(spec(2)) == {"n": 2}
    # an unreadable entry is a miss and is removed
    (tmp_path / "bucket" / cache.location(spec(2))).write_bytes(b"\x80\x05broken")
    with pytest.raises(KeyError):
        cache.load(spec(2))
    assert not cache.exists(spec(2))


def test_s3_roots_take_the_endpoint_from_the_standard_variables(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    fs, path = filesystem("s3://raygrid/grids/demo/")
    options = fs.__reduce__()[1][0]
    assert (type(fs).__name__, path, options["endpoint_override"], options["scheme"]) == (
        "S3FileSystem", "raygrid/grids/demo", "127.0.0.1:9000", "http"
    )
    assert resolve_root("s3://raygrid/grids/demo/") == "s3://raygrid/grids/demo"


def test_unwritable_roots_are_one_clear_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match=r"storage root .* is not writable while checking it.*choose another storage.root"):
        check_storage(blocker / "root")
    full = storage_error("/data", OSError(errno.ENOSPC, "No space left on device"), "writing the ranking stage's result")
    assert str(full) == (
        "storage root /data is not writable while writing the ranking stage's result (No space left on device); "
        "free space (or raise the quota) there, or choose another storage.root"
    )
