"""Result files: assembling them from a journal, loading them tidy (bench.analysis.files writes them).

A results file is a pytest-benchmark JSON file (``pytest-benchmark compare`` reads it) with
one more top-level section, ``jacbench``. Timed pairs are pytest-benchmark ``benchmarks``
with their raw samples in ``stats.data`` and our fields in ``extra_info``; pairs that were
not timed (wrong, unsupported, error, oom, timeout) have no stats to offer, so they live in
``jacbench.untimed`` with the same ``extra_info``. Nothing here imports torch.
"""

from __future__ import annotations

import json
import math
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from bench.analysis import visits
from bench.analysis.journal import Journal
from bench.analysis.schema import STATUSES
from bench.analysis.stats import spread, summarize

SCHEMA = 1
KEY = ["problem", "strategy", "device", "dtype", "torch", "machine"]
REQUIRED = ("problem", "strategy", "device", "dtype", "status")


class ResultsError(Exception):
    """A results file that cannot be loaded; the message is one line naming the file."""


class ResultsWarning(UserWarning):
    """Results that load, but not as plainly as asked (the same pair in two files)."""


def file_name(env: dict, started: datetime) -> str:
    return f"{env['machine']}_{env['device_kind']}_torch-{env['torch']}_{started:%Y%m%d-%H%M%S}.json"


def assemble(journal: Journal, wall_s: float | None = None, load: list | None = None) -> dict:
    """The results document of a finished journal, with the load sampled across the run
    (NOTE: [Load across the run])."""
    header = journal.header
    env = journal.env or {}
    records = [journal.results[p] for p in journal.pairs if p in journal.results]
    missing = [p for p in journal.pairs if p not in journal.results]
    if missing:
        raise ResultsError(f"{journal.path}: {len(missing)} pairs have no result yet, e.g. {missing[0]}")
    timed = [r for r in records if "stats" in r]
    untimed = [r for r in records if "stats" not in r]
    return {
        "machine_info": env.get("machine_info", {}),
        "commit_info": env.get("commit_info", {}),
        "benchmarks": timed,
        "datetime": datetime.now(timezone.utc).isoformat(),
        "version": env.get("pytest_benchmark", "unknown"),
        "jacbench": {
            "schema": SCHEMA,
            "run_id": header["run_id"],
            "profile": header["settings"]["profile"],
            "settings": header["settings"],
            "selection": header.get("selection", {}),
            "shard": header.get("shard"),
            "pairs": len(records),
            "started": header["created"],
            "wall_s": wall_s,
            "ceilings": env.get("ceilings", {}),
            "load": load or [],
            "untimed": untimed,
        },
    }


def read(path: Path) -> dict:
    """Parse and validate one results file, or raise a one-line :class:`ResultsError`."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    if not text.strip():
        raise ResultsError(f"{path}: empty file, not a results file")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}: truncated or corrupt JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("jacbench"), dict):
        raise ResultsError(f"{path}: not a jacbench results file (no 'jacbench' section)")
    schema = doc["jacbench"].get("schema")
    if not isinstance(schema, int) or schema > SCHEMA:
        raise ResultsError(f"{path}: results schema {schema!r} is not one this jacbench reads (<= {SCHEMA})")
    if not isinstance(doc.get("benchmarks"), list) or not isinstance(doc["jacbench"].get("untimed"), list):
        raise ResultsError(f"{path}: corrupt results file ('benchmarks' or 'jacbench.untimed' is not a list)")
    for i, rec in enumerate(doc["benchmarks"] + doc["jacbench"]["untimed"]):
        info = rec.get("extra_info") if isinstance(rec, dict) else None
        if not isinstance(info, dict) or any(k not in info for k in REQUIRED):
            raise ResultsError(f"{path}: record {i} lacks extra_info with {', '.join(REQUIRED)}")
        if info["status"] not in STATUSES:
            raise ResultsError(f"{path}: record {i} has unknown status {info['status']!r}")
        if "stats" in rec:
            data = rec["stats"].get("data") if isinstance(rec["stats"], dict) else None
            if not data or not all(isinstance(x, (int, float)) and math.isfinite(x) and x >= 0 for x in data):
                raise ResultsError(f"{path}: record {i} has no valid raw samples in stats.data")
    return doc


def rows(doc: dict, path: Path | str = "") -> list[dict]:
    """The tidy rows of one parsed results file."""
    env = doc.get("machine_info", {}).get("jacbench", {})
    jb = doc["jacbench"]
    ceilings = jb.get("ceilings", {})
    moved = visits.drift(r["extra_info"] for r in doc["benchmarks"])
    out = []
    for rec in doc["benchmarks"] + jb["untimed"]:
        info = dict(rec["extra_info"])
        work = info.pop("work", None) or {}
        row = {
            **info,
            **{k: work.get(k) for k in ("fevals", "fevals_calls", "vjps", "vjps_calls", "jvps", "jvps_calls", "flops")},
            "fallback_ops": ",".join(info.get("fallback_ops") or []),
            "torch": env.get("torch", "unknown"),
            "machine": env.get("machine", "unknown"),
            "device_name": env.get("device_name"),
            "threads": env.get("threads"),
            "commit": (env.get("commit") or {}).get("id"),
            "profile": jb.get("profile"),
            "run_id": jb.get("run_id"),
            "file": str(path),
            "samples": None,
        }
        if "stats" in rec:
            data = rec["stats"]["data"]
            s = summarize(data)
            row.update(samples=list(data), rounds=s.n, median=s.median, q1=s.q1, q3=s.q3, iqr=s.iqr,
                       rel_iqr=s.rel_iqr, ci_half=visits.interval(s.median, s.ci_half, info.get("visits"), moved),
                       drift=moved, min=s.min, mean=s.mean, noisy=s.noisy, stall=spread(data),
                       iterations=rec["stats"].get("iterations", 1))
            flops, peak_flops = row.get("flops"), ceilings.get(info["dtype"], {}).get("matmul_flops")
            bandwidth = ceilings.get(info["dtype"], {}).get("bandwidth")
            row["flops_per_s"] = flops / s.median if flops else None
            if peak_flops and bandwidth:
                bound = max((flops or 0) / peak_flops, (row.get("jac_bytes") or 0) / bandwidth)
                row["roofline"] = bound / s.median
        out.append(row)
    return out


COLUMNS = KEY + ["status", "reason", "median", "iqr", "rounds", "error", "tolerance", "first_call_s",
                 "peak_bytes", "jac_bytes", "mem_ratio", "family", "kind", "n", "m"]


def load(paths) -> pd.DataFrame:
    """Result files -> one tidy DataFrame, one row per (problem, strategy, device, dtype,
    torch, machine). All files are validated before any row is built, so a bad file gives
    a :class:`ResultsError` and never a partial frame."""
    frame = _frame(_read_all(paths))
    dupes = frame.duplicated(KEY, keep="last")
    if dupes.any():
        # the same pair measured twice (overlapping files): the later file wins, and says so
        first = frame[dupes].iloc[0]
        later = frame[(frame[KEY] == first[KEY]).all(axis=1)]["file"].iloc[-1]
        warnings.warn(ResultsWarning(
            f"{int(dupes.sum())} pairs are in more than one file (e.g. {_label(first)} in {first['file']} "
            f"and {later}); the later file's row is used"), stacklevel=2)
        frame = frame[~dupes]
    return frame.reset_index(drop=True)


def _read_all(paths) -> list[tuple[Path, dict]]:
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not paths:
        raise ResultsError("no results files given")
    return [(p, read(p)) for p in paths]


def _frame(docs: list[tuple[Path, dict]]) -> pd.DataFrame:
    frame = pd.DataFrame([r for p, doc in docs for r in rows(doc, p)])
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS)
    for col in ("median", "iqr", "rounds", "roofline", "flops_per_s", "noisy", "rel_iqr", "samples", "stall",
                "disturbed", "started", "seconds"):
        if col not in frame:
            frame[col] = None
    frame["retimed"] = [r if isinstance(r, list) else [] for r in frame.get("retimed", [None] * len(frame))]
    frame["mem_ratio"] = frame["peak_bytes"] / frame["jac_bytes"]
    return frame


def merge(paths) -> pd.DataFrame:
    """Files that are parts of one whole (shards, machines, devices) -> one DataFrame keyed by
    :data:`KEY`. Unlike :func:`load`, a pair found in two files is not quietly resolved: it
    is a :class:`ResultsError` naming both files, so merged parts are exactly the whole."""
    docs = _read_all(paths)
    frame = _frame(docs)
    dupes = frame[frame.duplicated(KEY, keep=False)]
    if not dupes.empty:
        first = dupes.iloc[0]
        same = dupes[(dupes[KEY] == first[KEY]).all(axis=1)]["file"].tolist()
        raise ResultsError(f"{same[-1]}: pair {_label(first)} is also in {same[0]}; "
                           f"{dupes.drop_duplicates(KEY).shape[0]} pairs overlap")
    return frame.reset_index(drop=True)


def _label(row) -> str:
    pair = " ".join(str(row[k]) for k in ("device", "dtype", "problem", "strategy"))
    return f"{pair} (torch {row['torch']}, machine {row['machine']})"


def origin(doc: dict, path: Path | str = "") -> dict:
    """What one results file was measured in and with, flat: torch and its build, CUDA,
    Python, machine, device, CPU, threads, commit, profile and timing policy, shard, and the
    devices and dtypes its rows hold. The environment name of a ``jacbench matrix`` run is
    ``environment`` (None for plain runs). For display, and for checking that two files
    are comparable before they are compared."""
    env = doc.get("machine_info", {}).get("jacbench", {}) or {}
    jb = doc["jacbench"]
    settings = jb.get("settings") or {}
    selection = jb.get("selection") or {}
    commit = env.get("commit") or {}
    records = [r["extra_info"] for r in doc["benchmarks"] + jb["untimed"]]
    return {
        "file": str(path),
        "environment": jb.get("environment") or selection.get("environment"),
        "machine": env.get("machine", "unknown"),
        "torch": env.get("torch", "unknown"),
        "torch_build": env.get("torch_build"),
        "cuda": env.get("cuda"),
        "cudnn": env.get("cudnn"),
        "python": env.get("python"),
        "pytest_benchmark": doc.get("version"),
        "device": env.get("device"),
        "device_kind": env.get("device_kind"),
        "device_name": env.get("device_name"),
        "cpu": env.get("cpu"),
        "cpu_count": env.get("cpu_count"),
        "threads": env.get("threads", settings.get("threads")),
        "commit": commit.get("id"),
        "dirty": commit.get("dirty"),
        "profile": jb.get("profile"),
        "policy": settings.get("policy"),
        "pair_timeout": settings.get("pair_timeout"),
        "seed": settings.get("seed"),
        "selection": {k: v for k, v in selection.items() if k != "environment"},
        "shard": jb.get("shard"),
        "run_id": jb.get("run_id"),
        "started": jb.get("started"),
        "wall_s": jb.get("wall_s"),
        "pairs": len(records),
        "devices": sorted({r["device"] for r in records}),
        "dtypes": sorted({r["dtype"] for r in records}),
    }


def latest(directory: Path = Path("results"), n: int = 1) -> list[Path]:
    files = sorted(Path(directory).glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    return files[:n]
