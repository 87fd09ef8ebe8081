"""What a sweep runs: (device, dtype, problem, strategy) pairs, profiles and shards.

The plan is data: a sorted list of :class:`Pair` plus :class:`Settings`, written into the
run's journal before anything runs, so a resumed or sharded run knows exactly what the
whole is.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import json
import math
from dataclasses import dataclass, fields, replace

import cases
from cases import PROFILES

from bench import kinds, strategies
from bench.analysis.schema import Pair, Row
from bench.measure.pair import Settings, one_line
from bench.measure.timing import Policy
from bench.sweep import machine

DTYPES = ("float32", "float64", "float16", "bfloat16")


@dataclass(frozen=True)
class Profile:
    """A named sweep size: which problems, how long each pair is timed, when it is cut off."""

    name: str
    policy: Policy
    pair_timeout: float  # seconds before a pair is stopped and recorded as a timeout


#: a round's seconds in every profile: rounds of a problem's strategies timed together,
#: interleaved, lose their pairing to each other's caches when shorter (NOTE: [Paired timing])
ROUND = 0.01

PROFILE_SETTINGS = {
    "quick": Profile("quick", Policy(warmup=1, min_rounds=3, max_time=0.1, precision=0.05, min_round_time=ROUND), 60.0),
    "standard": Profile("standard", Policy(warmup=1, min_rounds=5, max_time=0.4, precision=0.03,
                                           min_round_time=ROUND), 120.0),
    "full": Profile("full", Policy(warmup=2, visits=3, min_rounds=7, max_time=2.0, precision=0.01,
                                   min_round_time=ROUND), 600.0),
}
assert tuple(PROFILE_SETTINGS) == PROFILES


def profile(name: str) -> Profile:
    try:
        return PROFILE_SETTINGS[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose from {', '.join(PROFILES)}") from None


#: The least each of the timing policy's numbers may be (``--timing``).
_LEAST = {"warmup": 0, "retimes": 0, "visits": 1, "min_rounds": 1, "max_rounds": 1}


def timing(text: str | None) -> dict:
    """``--timing KEY=VALUE,...``: fields of :class:`Policy` that replace the profile's, e.g.
    ``retimes=0,max_time=0.05``. Each is checked; a bad one is a one-line ValueError."""
    types = {f.name: f.type for f in fields(Policy)}
    out = {}
    for item in cases.split_patterns([text] if text else None):
        key, sep, value = item.partition("=")
        if key not in types or not sep:
            raise ValueError(f"--timing takes KEY=VALUE with KEY one of {', '.join(types)}, not {item!r}")
        try:
            number = int(value) if types[key] in (int, "int") else float(value)
        except ValueError:
            raise ValueError(f"--timing {key} takes {'a whole number' if key in _LEAST else 'seconds'}, "
                             f"not {value!r}") from None
        if number < _LEAST.get(key, 0) or not math.isfinite(number) or (key not in _LEAST and number <= 0):
            least = f"at least {_LEAST[key]}" if key in _LEAST else "positive and finite"
            raise ValueError(f"--timing {key} must be {least}, not {value}")
        out[key] = number
    return out


def settings(profile_name: str, *, timing_text: str | None = None, pair_timeout: float | None = None,
             threads: int | None = None, seed: int = 0) -> "Settings":
    """A run's settings: the profile's, with ``--timing`` and the other options over them."""
    chosen = profile(profile_name)
    return Settings(profile=profile_name, policy=replace(chosen.policy, **timing(timing_text)),
                    pair_timeout=pair_timeout or chosen.pair_timeout, threads=threads or machine.default_threads(),
                    seed=seed)


def load_plugins(modules) -> list[str]:
    """Import modules that register extra problems or strategies (``jacbench run --plugin``)."""
    names = cases.split_patterns(modules)
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - the user's module, broken in any way: one line
            raise ValueError(f"cannot import plugin {name!r}: {one_line(e)}") from None
    return names


def select_strategies(patterns, profile: str | None = None) -> list[str]:
    """Strategy names matching any glob; with a profile, only those it runs (a strategy
    named exactly is kept whatever its tier)."""
    pats = cases.split_patterns(patterns)
    names = list(strategies.STRATEGIES)
    for pat in pats:
        if not any(fnmatch.fnmatchcase(n, pat) for n in names):
            raise ValueError(f"no strategy matches {pat!r}; choose from {', '.join(names)}")
    limit = PROFILES.index(profile) if profile else len(PROFILES)
    return [n for n in names if (not pats or any(fnmatch.fnmatchcase(n, p) for p in pats))
            and (strategies.STRATEGIES[n].tier <= limit or n in pats)]


def check_dtypes(dtypes) -> list[str]:
    out = cases.split_patterns(dtypes) or ["float32"]
    for d in out:
        if d not in DTYPES:
            raise ValueError(f"unknown dtype {d!r}; choose from {', '.join(DTYPES)}")
    return out


def make(profile: str, *, devices: list[str], dtypes=None, problems=None, tags=None,
         strategy_patterns=None, shard: tuple[int, int] | None = None) -> list[Pair]:
    """The sorted pairs of a sweep; every filter raises a one-line ValueError when invalid."""
    chosen = cases.select(problems, tags=tags, profile=profile)
    if not chosen:
        raise ValueError(f"no problem is in profile {profile!r} with these filters")
    for p in chosen:
        if p.kind not in kinds.KINDS:
            raise ValueError(f"problem {p.name!r} is of kind {p.kind!r}, which bench.kinds does not know; "
                             f"known kinds: {', '.join(kinds.KINDS)}")
    names = select_strategies(strategy_patterns, profile)
    order = {p.name: i for i, p in enumerate(cases.problems())}
    pairs = sorted(
        (Pair(dev, dt, p.name, s) for dev in devices for dt in check_dtypes(dtypes) for p in chosen for s in names),
        key=lambda q: (q.device, q.dtype, order[q.problem], names.index(q.strategy)),
    )
    return take_shard(pairs, shard) if shard else pairs


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` with 1 <= i <= n."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard takes i/n, e.g. 1/4, not {text!r}") from None
    if not 1 <= i <= n:
        raise ValueError(f"--shard {text}: i must be between 1 and n")
    return i, n


def take_shard(pairs: list[Pair], shard: tuple[int, int]) -> list[Pair]:
    """Shard i of n: every pair whose stable hash falls in bucket i. Deterministic across
    machines and independent of the other pairs, so shards partition the plan exactly."""
    i, n = shard
    return [p for p in pairs if int(hashlib.sha1(p.id.encode()).hexdigest(), 16) % n == i - 1]


def fingerprint(pairs: list[Pair], settings: Settings, env: dict) -> str:
    """Identity of a run's intent: same pairs, settings and environment -> same run."""
    blob = json.dumps([[p.id for p in pairs], settings.as_dict(), env], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def identity(pair: Pair, seed: int) -> dict:
    """The row identity of a planned pair (``Row.identity``), kept in the run's journal so that
    the runner can write the row of a pair whose process died without importing either registry."""
    return Row.of(cases.get(pair.problem), strategies.get(pair.strategy), pair.device, pair.dtype, seed).identity()
