"""Stage keys, the atomic content-addressed cache, and lazy de-duplicating resolution."""

from __future__ import annotations

from collections import Counter

import pytest

from raygrid.pipeline import LocalResolver, StageCache, StageSpec, stage
from raygrid.pipeline.resolve import materialize

CALLS: Counter[str] = Counter()


@stage("test_source")
def _source(params, inputs, ctx):
    CALLS["test_source"] += 1
    return list(range(params["n"]))


@stage("test_double")
def _double(params, inputs, ctx):
    CALLS["test_double"] += 1
    return [2 * x for x in inputs["values"]]


@stage("test_total")
def _total(params, inputs, ctx):
    CALLS["test_total"] += 1
    return sum(inputs["values"]) + params.get("offset", 0)


def graph(n=3, offset=0):
    source = StageSpec("test_source", {"n": n})
    double = StageSpec("test_double", {}, {"values": source})
    return StageSpec("test_total", {"offset": offset}, {"values": double})


@pytest.fixture(autouse=True)
def _reset():
    CALLS.clear()


def test_keys_depend_on_params_and_inputs_not_on_resources():
    assert graph().key == graph().key
    assert graph(offset=1).key != graph().key
    assert graph(n=4).key != graph().key  # a changed ancestor changes the descendants' keys
    assert StageSpec("test_source", {"n": 3}, cpu=4, gpu=0.5).key == StageSpec("test_source", {"n": 3}).key


def test_each_key_is_computed_once_and_shared(tmp_path):
    resolver = LocalResolver(StageCache(tmp_path))
    assert resolver.resolve(graph()) == 6
    assert resolver.resolve(graph(offset=10)) == 16  # shares source and double
    assert CALLS == Counter({"test_source": 1, "test_double": 1, "test_total": 2})
    assert resolver.ledger.counts["test_double"]["shared"] == 1
    assert resolver.ledger.total("computed") == 4


def test_second_run_is_served_from_disk_without_touching_ancestors(tmp_path):
    LocalResolver(StageCache(tmp_path)).resolve(graph())
    CALLS.clear()
    again = LocalResolver(StageCache(tmp_path))
    assert again.resolve(graph()) == 6
    assert CALLS == Counter()
    assert again.ledger.total("computed") == 0
    assert again.ledger.counts == {"test_total": Counter({"cached": 1})}


def test_corrupt_entry_is_recomputed(tmp_path):
    cache = StageCache(tmp_path)
    LocalResolver(cache).resolve(graph())
    cache.path(graph()).write_bytes(b"\x80\x05truncated")
    CALLS.clear()
    assert LocalResolver(cache).resolve(graph()) == 6
    assert CALLS["test_total"] == 1 and CALLS["test_source"] == 0  # ancestors still served from disk


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path):
    cache = StageCache(tmp_path)
    spec = StageSpec("test_source", {"n": 2})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.save(spec, Unpicklable(), 0.0)
    assert not cache.exists(spec)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    cache.save(spec, [0, 1], 0.0)
    assert cache.load(spec) == [0, 1]
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [f"{spec.key}.pkl"]


def test_materialize_falls_back_to_computing_inputs_when_the_entry_vanished(tmp_path):
    cache = StageCache(tmp_path)
    value, info = materialize(graph(), cache, "cpu", None)
    assert value == 6 and info["how"] == "computed"
    value, info = materialize(graph(), cache, "cpu", None)
    assert value == 6 and info["how"] == "cached"
