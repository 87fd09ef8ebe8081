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
import re
import warnings
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from bench.analysis import cost, visits
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
    """Parse and validate one results file (NOTE: [Results schema]), or raise a one-line
    :class:`ResultsError` naming the file and the field."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    if not text.strip():
        raise ResultsError(f"{path}: empty file, not a results file")
    try:
        doc = json.loads(text)
        del text  # a large file's text is as large again as its parse
    except (json.JSONDecodeError, RecursionError) as e:
        # json's messages that name a place end in "at" ("Unterminated string starting at")
        where = (f" ({e.msg.removesuffix(' at')} at line {e.lineno}, column {e.colno})"
                 if isinstance(e, json.JSONDecodeError) else "")
        raise ResultsError(f"{path}: truncated or corrupt JSON{where}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("jacbench"), dict):
        raise ResultsError(f"{path}: not a jacbench results file (no 'jacbench' section)")
    schema = doc["jacbench"].get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool) or schema > SCHEMA:
        raise ResultsError(f"{path}: results schema {schema!r} is not one this jacbench reads (<= {SCHEMA})")
    try:
        FILE.check(doc, "")
    except Invalid as e:
        raise ResultsError(f"{path}: {e}") from None
    return doc


# --- what a results file holds -----------------------------------------------------------------

#: NOTE: [Results schema]
#:     A file is loaded only if every command (summary, report, compare) can use it, so
#:     :func:`read` checks every field they read against :data:`FILE` and names the first
#:     that breaks it, with its path (``benchmarks[3].stats.data[0] is 0; timings must be
#:     positive seconds, at most a day``). Fields are typed as this code writes them; a
#:     field a command can do without may be missing (older files lack the later ones, and
#:     :func:`_frame` gives every row all the columns), but where it is there it must be
#:     right. Unknown fields are left alone (pytest-benchmark's, a plugin's). Numbers must
#:     be finite and within bounds no real run reaches, so that no command overflows:
#:     a raw sample is a call's seconds, above 0 and at most :data:`DAY` (a call that
#:     takes longer is not a timing); other durations at most :data:`LONG`; moments unix
#:     times up to :data:`EPOCH_END`; counts and bytes whole and below 2**63 (int64, as
#:     pandas keeps them); shares of rounds between 0 and 1.
DAY = 86_400.0
LONG = 1e7  # seconds, 116 days: longer than any run, pieces added up
EPOCH_END = 1e10  # a unix time in the year 2286
BIG = 2.0**63  # counts, bytes and FLOPs stay below this
RATE = 1e21  # FLOP/s or bytes/s: a ceiling beyond any machine


class Invalid(ValueError):
    """A field that breaks :data:`FILE`: its path, what it is and the rule, as one line."""


def _shown(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else ("infinite" if v > 0 else "-infinite") if math.isinf(v) else f"{v:g}"
    if isinstance(v, int):
        return str(v) if abs(v) < 10**15 else f"the {len(str(abs(v)))}-digit number {str(v)[:6]}..."
    if isinstance(v, str):
        return f"the string {json.dumps(v if len(v) <= 30 else v[:27] + '...')}"
    if isinstance(v, list):
        return "a list" if v else "an empty list"
    if isinstance(v, dict):
        return "an object" if v else "an empty object"
    return type(v).__name__


class Spec:
    """One field's type and values; ``check(value, path)`` raises :class:`Invalid`. A spec of a
    single value also has ``ok(value)``, the same test without a message, which its containers
    ask first: they name a value's place only where it fails (a file holds millions of them)."""

    what = "a value"
    ok = None

    def check(self, v, at: str) -> None:
        raise NotImplementedError

    def bad(self, v, at: str, rule: str | None = None):
        return Invalid(f"{at} is {_shown(v)}; {rule or 'it must be ' + self.what}")


class Num(Spec):
    """A finite number in ``[lo, hi]`` (``(lo, hi]`` when ``above``), whole where ``whole``."""

    def __init__(self, lo=-BIG, hi=BIG, *, above=False, whole=False, rule=""):
        self.lo, self.hi, self.above, self.whole, self.rule = lo, hi, above, whole, rule
        self.what = "a whole number" if whole else "a number"

    def ok(self, v) -> bool:
        t = type(v)
        if t is float:
            return (math.isfinite(v) and (not self.whole or v.is_integer())
                    and (v > self.lo if self.above else v >= self.lo) and v <= self.hi)
        return t is int and (v > self.lo if self.above else v >= self.lo) and v <= self.hi

    def check(self, v, at):
        if self.ok(v):
            return
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.bad(v, at)
        low = f"above {self.lo:g}" if self.above else f"at least {self.lo:g}"
        rule = self.rule or f"it must be {self.what} {low} and at most {self.hi:g}"
        if isinstance(v, float) and not math.isfinite(v):
            raise self.bad(v, at, rule)
        if self.whole and isinstance(v, float) and not v.is_integer():
            raise self.bad(v, at)
        raise self.bad(v, at, rule)


class Str(Spec):
    def __init__(self, *, choices=(), empty=True, pattern=None, rule=""):
        self.choices, self.empty, self.pattern, self.rule = tuple(choices), empty, pattern, rule
        self.what = "a string"

    def ok(self, v) -> bool:
        return (type(v) is str and (not self.choices or v in self.choices) and (self.empty or bool(v.strip()))
                and (not self.pattern or re.fullmatch(self.pattern, v) is not None))

    def check(self, v, at):
        if not isinstance(v, str):
            raise self.bad(v, at)
        if self.choices and v not in self.choices:
            raise self.bad(v, at, f"it must be one of {', '.join(self.choices)}")
        if not (self.empty or v.strip()) or (self.pattern and not re.fullmatch(self.pattern, v)):
            raise self.bad(v, at, self.rule or "it must not be empty")


class Bool(Spec):
    what = "true or false"

    def ok(self, v) -> bool:
        return type(v) is bool

    def check(self, v, at):
        if not isinstance(v, bool):
            raise self.bad(v, at)


class Opt(Spec):
    """``inner``, or null."""

    def __init__(self, inner: Spec):
        self.inner, self.what = inner, f"{inner.what} or null"
        if inner.ok is not None:
            self.ok = lambda v: v is None or inner.ok(v)

    def check(self, v, at):
        if v is not None:
            self.inner.check(v, at)


class Items(Spec):
    """A list of ``item``s (at least ``least``); ``ordered``: in order of ``item[0]``."""

    def __init__(self, item: Spec, *, least=0, rule="", ordered=False):
        self.item, self.least, self.rule, self.ordered = item, least, rule, ordered
        self.what = "a list"

    def check(self, v, at):
        if not isinstance(v, list):
            raise self.bad(v, at)
        if len(v) < self.least:
            raise self.bad(v, at, self.rule or f"it must have at least {self.least} items")
        ok = self.item.ok
        for i, x in enumerate(v):
            if ok is None or not ok(x):  # a place named only where it is needed
                self.item.check(x, f"{at}[{i}]")
        if self.ordered:
            for i in range(1, len(v)):
                if v[i][0] < v[i - 1][0]:
                    raise Invalid(f"{at}[{i}] comes before {at}[{i - 1}]; {self.rule or 'it must be in time order'}")


class Places(Spec):
    """A list of fixed length: one spec per place."""

    def __init__(self, *places: Spec):
        self.places = places
        self.what = f"a list of {len(places)} items"

    def check(self, v, at):
        if not isinstance(v, list) or len(v) != len(self.places):
            raise self.bad(v, at)
        for i, (x, spec) in enumerate(zip(v, self.places)):
            spec.check(x, f"{at}[{i}]")


class Obj(Spec):
    """An object whose named fields, where present, are as given; ``required`` ones must be."""

    what = "an object"

    def __init__(self, fields: dict, required=()):
        self.fields, self.required = fields, tuple(required)

    def check(self, v, at):
        if not isinstance(v, dict):
            raise self.bad(v, at)
        prefix = f"{at}." if at else ""
        for k in self.required:
            if k not in v:
                raise Invalid(f"{prefix}{k} is missing")
        for k, spec in self.fields.items():
            if k in v and (spec.ok is None or not spec.ok(v[k])):
                spec.check(v[k], prefix + k)


class Each(Spec):
    """An object of any keys, each value an ``item`` (the ceilings, per dtype)."""

    what = "an object"

    def __init__(self, item: Spec):
        self.item = item

    def check(self, v, at):
        if not isinstance(v, dict):
            raise self.bad(v, at)
        for k, x in v.items():
            self.item.check(x, f"{at}.{k}")


TEXT, NAME = Str(), Str(empty=False)
SAMPLE = Num(0.0, DAY, above=True, rule=f"timings must be positive seconds, at most a day ({DAY:g})")
SECONDS = Num(0.0, LONG)
WHEN = Num(0.0, EPOCH_END, rule=f"it must be a unix time, from 0 to {EPOCH_END:g}")
COUNT = Num(0, BIG, whole=True)
AMOUNT = Num(0.0, BIG)  # bytes, FLOPs: not always whole (scaled copies of a file)
SHARE = Num(0.0, 1.0)
CPUS = Num(0.0, 1e6)
SIZE = Num(1, BIG, whole=True, rule="a size must be a whole number, at least 1")
PER_ROUND = Items(Opt(Num(-LONG, LONG)))

#: One visit of a pair (bench.analysis.visits.visit), kept or dropped as disturbed.
VISIT = Obj({"median": SAMPLE, "rounds": Num(1, BIG, whole=True), "disturbed": Opt(SHARE),
             "started": Opt(WHEN), "seconds": Opt(SECONDS), "busy": Opt(CPUS)},
            required=("median", "rounds", "disturbed", "started", "seconds"))
WORK = Obj({k: Opt(AMOUNT) for k in ("fevals", "fevals_calls", "vjps", "vjps_calls", "jvps", "jvps_calls", "flops")})
#: A claim problem's published figure (cases.Problem.claim).
CLAIM = Obj({"fast": NAME, "slow": NAME, "ratio": Num(0.0, 1e12, above=True), "figure": TEXT, "source": TEXT,
             "url": TEXT, "hardware": TEXT, "device": NAME}, required=("fast", "slow", "ratio", "source", "device"))
#: A pair's ``extra_info``: what bench.analysis.schema.Row.info writes.
INFO = Obj({
    "problem": NAME, "strategy": NAME, "device": NAME, "dtype": NAME, "status": Str(choices=STATUSES),
    "mode": TEXT, "fd_order": Num(0, 2, whole=True), "family": TEXT, "kind": TEXT, "n": SIZE, "m": SIZE,
    "reason": TEXT, "error": Opt(Num(0.0, 1e300)), "tolerance": Opt(Num(0.0, 1e300)),
    "first_call_s": Opt(SECONDS), "peak_bytes": Opt(AMOUNT), "jac_bytes": Opt(Num(0.0, BIG, above=True)),
    "fallback": Bool(), "fallback_ops": Items(TEXT), "work": Opt(WORK), "notes": Obj({}),
    "problem_flops": Opt(AMOUNT), "seed": Num(-BIG, BIG, whole=True), "precise": Bool(),
    "cpu": PER_ROUND, "switches": PER_ROUND, "delay": PER_ROUND, "disturbed": Opt(SHARE),
    "visits": Items(VISIT), "retimed": Items(VISIT), "started": Opt(WHEN), "seconds": Opt(SECONDS),
    "spent": Each(SECONDS), "revisit_failed": Bool(), "host": TEXT, "job": Opt(TEXT), "claim": Opt(CLAIM),
    "f_s": Opt(SAMPLE), "f_iqr": Opt(SECONDS), "clock": Str(choices=("wall", "cpu")), "cycles": PER_ROUND,
    "wall": PER_ROUND,
}, required=(*REQUIRED, "n", "m"))  # sizes: in every row since the first version, and the figures' axes
STATS = Obj({"data": Items(SAMPLE, least=1, rule="a timed pair needs its raw samples"),
             "iterations": Num(1, BIG, whole=True)}, required=("data",))
TIMED = Obj({"extra_info": INFO, "stats": STATS}, required=("extra_info", "stats"))
UNTIMED = Obj({"extra_info": INFO, "stats": STATS}, required=("extra_info",))
#: ``machine_info.jacbench``: bench.sweep.machine.describe.
ENV = Obj({
    "machine": NAME, "torch": NAME, "torch_build": Opt(TEXT), "cuda": Opt(TEXT), "cudnn": Opt(COUNT),
    "device": Opt(TEXT), "device_kind": Opt(TEXT), "device_name": Opt(TEXT), "cpu": Opt(TEXT),
    "cpu_count": Opt(SIZE), "threads": Opt(SIZE), "python": Opt(TEXT),
    "commit": Opt(Obj({"id": Opt(TEXT), "dirty": Opt(Bool())})),
})
SETTINGS = Obj({"profile": Opt(TEXT), "policy": Opt(Obj({})), "pair_timeout": Opt(Num(0.0, LONG, above=True)),
                "threads": Opt(SIZE), "seed": Opt(Num(-BIG, BIG, whole=True))})
SELECTION = Obj({"environment": Opt(TEXT), **{k: Opt(Items(TEXT)) for k in ("cases", "tags", "strategies", "dtype")}})
#: One load sample (bench.analysis.load.Sampler): unix time, CPUs other work used, CPU pressure.
LOAD = Places(WHEN, CPUS, Opt(SHARE))
FILE = Obj({
    "machine_info": Obj({"jacbench": ENV}),
    "version": Opt(TEXT),
    "benchmarks": Items(TIMED),
    "jacbench": Obj({
        "run_id": Opt(TEXT), "profile": Opt(TEXT), "environment": Opt(TEXT), "settings": Opt(SETTINGS),
        "selection": Opt(SELECTION),
        "shard": Opt(Str(pattern=r"[1-9][0-9]*/[1-9][0-9]*", rule="a shard is i/n, e.g. 2/4")),
        "pairs": Opt(COUNT), "started": Opt(TEXT), "wall_s": Opt(SECONDS),
        "ceilings": Each(Obj({"matmul_flops": Opt(Num(0.0, RATE, above=True)),
                              "bandwidth": Opt(Num(0.0, RATE, above=True)), "dtype": Opt(TEXT)})),
        "load": Items(LOAD, ordered=True, rule="load samples must be in time order"),
        "untimed": Items(UNTIMED),
    }, required=("untimed",)),
}, required=("benchmarks", "jacbench"))


def rows(doc: dict, path: Path | str = "") -> Iterator[dict]:
    """The tidy rows of one parsed results file, one at a time."""
    env = doc.get("machine_info", {}).get("jacbench", {})
    jb = doc["jacbench"]
    ceilings = jb.get("ceilings", {})
    moved = visits.drift(r["extra_info"] for r in doc["benchmarks"])
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
            "gpu": env.get("device_name") if str(info.get("device", "")).startswith("cuda") else None,
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
            row.update(samples=data, rounds=s.n, median=s.median, q1=s.q1, q3=s.q3, iqr=s.iqr,
                       rel_iqr=s.rel_iqr, ci_half=visits.interval(s.median, s.ci_half, info.get("visits"), moved),
                       drift=moved, min=s.min, mean=s.mean, noisy=s.noisy, stall=spread(data),
                       iterations=rec["stats"].get("iterations", 1))
            flops, peak_flops = row.get("flops"), ceilings.get(info["dtype"], {}).get("matmul_flops")
            bandwidth = ceilings.get(info["dtype"], {}).get("bandwidth")
            row["flops_per_s"] = flops / s.median if flops else None
            if peak_flops and bandwidth:
                bound = max((flops or 0) / peak_flops, (row.get("jac_bytes") or 0) / bandwidth)
                row["roofline"] = bound / s.median
        yield row


COLUMNS = KEY + ["status", "reason", "median", "iqr", "rounds", "error", "tolerance", "first_call_s",
                 "peak_bytes", "jac_bytes", "mem_ratio", "family", "kind", "n", "m"]


def load(paths, on_read=None) -> pd.DataFrame:
    """Result files -> one tidy DataFrame, one row per (problem, strategy, device, dtype,
    torch, machine). A bad file gives a :class:`ResultsError` and never a partial frame.
    ``on_read(path, doc)`` sees each parsed file before its rows are taken and it is let go
    (a report keeps what it needs of the file; a large file is not held twice)."""
    frame = _frame(_read_all(paths, on_read))
    dupes = frame.duplicated(KEY, keep="last")
    if dupes.any():
        # the same pair measured twice (overlapping files): the later file wins, and says so
        first = frame[dupes].iloc[0]
        later = frame[(frame[KEY] == first[KEY]).all(axis=1)]["file"].iloc[-1]
        warnings.warn(ResultsWarning(
            f"{int(dupes.sum())} pairs are in more than one file (e.g. {_label(first)} in {first['file']} "
            f"and {later}); the later file's row is used"), stacklevel=2)
        frame = frame[~dupes]
    return cost.add_columns(frame.reset_index(drop=True))


def _read_all(paths, on_read=None):
    """(path, rows) of each file, read one at a time as they are asked for."""
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not paths:
        raise ResultsError("no results files given")
    for p in paths:
        doc = read(p)
        if on_read is not None:
            on_read(p, doc)
        yield p, rows(doc, p)


#: Columns of a timed row (``rows``), which every frame has, timed rows or not.
TIMED_COLUMNS = ("samples", "rounds", "median", "q1", "q3", "iqr", "rel_iqr", "ci_half", "drift", "min", "mean",
                 "noisy", "stall", "iterations", "flops_per_s", "roofline")
WORK_COLUMNS = ("fevals", "fevals_calls", "vjps", "vjps_calls", "jvps", "jvps_calls", "flops")


CHUNK = 10_000  # rows made into a frame at a time (:func:`_frame`)


def _frame(files) -> pd.DataFrame:
    """The rows of files (:func:`_read_all`) as one frame with every column a command reads,
    even where no file has it (an older file, a shard without pairs): missing values are None."""
    # a chunk at a time: 100k rows as dicts take as much memory again as the frame they make
    parts, chunk = [], []
    for _, file_rows in files:
        for row in file_rows:
            chunk.append(row)
            if len(chunk) == CHUNK:
                parts.append(pd.DataFrame(chunk))
                chunk = []
    if chunk or not parts:
        parts.append(pd.DataFrame(chunk))
    frame = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True).infer_objects()
    for col in dict.fromkeys([*COLUMNS, *(k for k in INFO.fields if k != "work"), *WORK_COLUMNS, *TIMED_COLUMNS,
                              "fallback_ops", "device_name", "gpu", "threads", "commit", "profile", "run_id", "file"]):
        if col not in frame:
            frame[col] = None
    frame["retimed"] = [r if isinstance(r, list) else [] for r in frame["retimed"]]
    frame["mem_ratio"] = pd.to_numeric(frame["peak_bytes"], errors="coerce") / pd.to_numeric(
        frame["jac_bytes"], errors="coerce")
    return frame


def merge(paths) -> pd.DataFrame:
    """Files that are parts of one whole (shards, machines, devices) -> one DataFrame keyed by
    :data:`KEY`. Unlike :func:`load`, a pair found in two files is not quietly resolved: it
    is a :class:`ResultsError` naming both files, so merged parts are exactly the whole."""
    frame = _frame(_read_all(paths))
    dupes = frame[frame.duplicated(KEY, keep=False)]
    if not dupes.empty:
        first = dupes.iloc[0]
        same = dupes[(dupes[KEY] == first[KEY]).all(axis=1)]["file"].tolist()
        raise ResultsError(f"{same[-1]}: pair {_label(first)} is also in {same[0]}; "
                           f"{dupes.drop_duplicates(KEY).shape[0]} pairs overlap")
    return cost.add_columns(frame.reset_index(drop=True))


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
