"""Helpers of the fault-injection tests: processes of this test's own tree, MLflow and cache checks.

Only processes descending from the test process (or a process the test started)
are ever signalled: other Ray instances on the machine are never touched.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from raygrid.pipeline.cache import StageCache
from raygrid.tracking.store import GridTracker, resolve_tracking

#: Grid-file settings that keep fault tests quick on a 2-core machine.
QUICK = {"retries": 2}


def write_grid(folder: Path, doc: dict[str, Any]) -> Path:
    """Write ``doc`` as ``<folder>/<name>.yaml``."""
    path = folder / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def descendants(root: int) -> list[int]:
    """Process ids below ``root`` (children, grandchildren, ...), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> str:
    """The command line (process title) of ``pid``; empty if it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def find_process(root: int, prefix: str) -> int | None:
    """A descendant of ``root`` whose title starts with ``prefix`` (e.g. ``ray::ranking``)."""
    for pid in descendants(root):
        if cmdline(pid).startswith(prefix):
            return pid
    return None


class Killer(threading.Thread):
    """Kills (SIGKILL), once each, the first descendant of ``root`` matching each title prefix.

    Attributes:
        killed: ``(prefix, pid, title)`` of every process killed.
    """

    def __init__(self, root: int, prefixes: list[str], *, ready: Callable[[], bool] | None = None, timeout: float = 120) -> None:
        super().__init__(daemon=True)
        self.root, self.prefixes, self.ready, self.timeout = root, list(prefixes), ready, timeout
        self.killed: list[tuple[str, int, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        end = time.monotonic() + self.timeout
        while self.prefixes and not self.stop.is_set() and time.monotonic() < end:
            if self.ready is None or self.ready():
                for prefix in list(self.prefixes):
                    pid = find_process(self.root, prefix)
                    if pid is not None:
                        title = cmdline(pid)
                        os.kill(pid, signal.SIGKILL)
                        self.killed.append((prefix, pid, title))
                        self.prefixes.remove(prefix)
            time.sleep(0.05)


def session_runs(tracking: str, name: str, base: Path | None = None) -> tuple[GridTracker, Any, dict[str, Any]]:
    """The tracker, latest grid run and its trial runs (by grid key) of grid ``name``."""
    tracker = GridTracker(resolve_tracking(tracking, base=base))
    experiment = tracker.experiment_id(name, create=False)
    parent = tracker.latest_grid_run(experiment)
    return tracker, parent, tracker.trial_runs(experiment, parent.info.run_id)


def all_trial_runs(tracker: GridTracker, name: str) -> list[Any]:
    """Every trial run of grid ``name``, across all its sessions."""
    experiment = tracker.experiment_id(name, create=False)
    return tracker.client.search_runs([experiment], filter_string="tags.`raygrid.kind` = 'trial'", max_results=5000)


def run_statuses(db: Path) -> dict[str, str]:
    """Trial run name -> status, read straight from an MLflow SQLite database (no MLflow import)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            rows = con.execute(
                "select r.name, r.status from runs r join tags t on t.run_uuid = r.run_uuid "
                "where t.key = 'raygrid.kind' and t.value = 'trial'"
            ).fetchall()
    except sqlite3.Error:
        return {}
    return dict(rows)


def started_trials(db: Path) -> int:
    """How many trial runs a coordinator has started on (their ``raygrid.attempts`` tag), from the SQLite database."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("select count(*) from tags where key = 'raygrid.attempts'").fetchone()[0]
    except sqlite3.Error:
        return 0


def audit(tracker: GridTracker, name: str, trials: list[str], cache: StageCache) -> dict[str, int]:
    """What the reliability table counts for grid ``name``.

    Returns:
        ``finished`` (grid points whose one run FINISHED), ``duplicated`` (runs beyond
        one per grid point), ``lost`` (grid points without a run), ``split`` (metrics with
        more than one value in their history), ``corrupted`` (cache entries that do not
        load back under their own key) and ``entries`` (cache entries checked).
    """
    runs = all_trial_runs(tracker, name)
    by_key: dict[str, list[Any]] = {}
    for run in runs:
        by_key.setdefault(run.data.tags["raygrid.grid_key"], []).append(run)
    split = 0
    for run in runs:
        for metric in run.data.metrics:
            if len(tracker.client.get_metric_history(run.info.run_id, metric)) != 1:
                split += 1
    corrupted = 0
    entries = cache.entries()
    for location in entries:
        try:
            record = cache.read_record(location)
            assert Path(location).stem == record["key"] or location.endswith(f"{record['key']}.pkl")
        except Exception:  # noqa: BLE001  (any unreadable entry is a corrupted one)
            corrupted += 1
    return {
        "finished": sum(1 for t in trials if len(by_key.get(t, [])) == 1 and by_key[t][0].info.status == "FINISHED"),
        "duplicated": sum(max(0, len(v) - 1) for v in by_key.values()),
        "lost": sum(1 for t in trials if t not in by_key),
        "split": split,
        "corrupted": corrupted,
        "entries": len(entries),
    }


def record_row(fault: str, injected: int, counts: dict[str, int], trials: int, seconds: float) -> None:
    """Append one reliability-table row to ``$RAYGRID_RELIABILITY_LOG`` (when set): what the README table shows."""
    path = os.environ.get("RAYGRID_RELIABILITY_LOG")
    if not path:
        return
    import json

    with open(path, "a") as fh:
        fh.write(json.dumps({"fault": fault, "injected": injected, "trials": trials, "seconds": round(seconds, 1), **counts}) + "\n")
