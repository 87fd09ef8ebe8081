"""The problem registry: registration and selection by name glob, tag, family and profile."""

from __future__ import annotations

import fnmatch
import re

from .problem import PROFILES, Problem

_PROBLEMS: dict[str, Problem] = {}
_NAME = re.compile(r"^[a-z0-9]+(?:[.-][a-z0-9]+)*$")


def register(*problems: Problem) -> None:
    """Add problems to the registry; names must be unique kebab-case ids."""
    for p in problems:
        if not _NAME.match(p.name):
            raise ValueError(f"problem name {p.name!r} is not kebab-case")
        if p.name in _PROBLEMS:
            raise ValueError(f"problem {p.name!r} is registered twice")
        if not _NAME.match(p.kind):
            raise ValueError(f"problem {p.name!r} has kind {p.kind!r}, not a kebab-case name")
        if not 0 <= p.tier < len(PROFILES):
            raise ValueError(f"problem {p.name!r} has tier {p.tier} outside {PROFILES}")
        _PROBLEMS[p.name] = p


def problems() -> list[Problem]:
    """All problems, in registration order."""
    return list(_PROBLEMS.values())


def get(name: str) -> Problem:
    try:
        return _PROBLEMS[name]
    except KeyError:
        raise ValueError(f"unknown problem {name!r}; see `jacbench list`") from None


def families() -> list[str]:
    return sorted({p.family for p in _PROBLEMS.values()})


def known_kinds() -> list[str]:
    """The kinds of the registered problems, in registration order."""
    return list(dict.fromkeys(p.kind for p in _PROBLEMS.values()))


def known_tags() -> list[str]:
    return sorted({t for p in _PROBLEMS.values() for t in p.tags})


def split_patterns(patterns: str | list[str] | None) -> list[str]:
    """Comma-separated or repeated globs, as the CLI takes them."""
    if not patterns:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    return [q.strip() for p in patterns for q in p.split(",") if q.strip()]


def select(
    patterns: str | list[str] | None = None,
    tags: str | list[str] | None = None,
    profile: str | None = None,
    kinds: str | list[str] | None = None,
) -> list[Problem]:
    """Problems matching every given filter.

    Args:
        patterns: name globs (``'mlp-*'``); a problem matches if any glob matches.
        tags: a problem matches if it carries any of these tags.
        profile: one of :data:`PROFILES`; keeps the problems that profile runs. A problem named
            exactly (no glob characters) is kept whatever its profile.
        kinds: keep only these kinds.

    Raises:
        ValueError: a one-line message naming the valid choices, for an unknown profile,
            tag or kind, or a name glob that matches no problem.
    """
    pats, want_tags, want_kinds = split_patterns(patterns), split_patterns(tags), split_patterns(kinds)
    if profile is not None and profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    for t in want_tags:
        if t not in known_tags():
            raise ValueError(f"unknown tag {t!r}; choose from {', '.join(known_tags())}")
    for k in want_kinds:
        if k not in known_kinds():
            raise ValueError(f"unknown kind {k!r}; choose from {', '.join(known_kinds())}")
    for pat in pats:
        if not any(fnmatch.fnmatchcase(p.name, pat) for p in _PROBLEMS.values()):
            raise ValueError(
                f"no problem matches {pat!r}; families: {', '.join(families())} (see `jacbench list`)"
            )
    out = []
    for p in _PROBLEMS.values():
        if pats and not any(fnmatch.fnmatchcase(p.name, pat) for pat in pats):
            continue
        if want_tags and not p.tags & set(want_tags):
            continue
        if want_kinds and p.kind not in want_kinds:
            continue
        if profile is not None and not p.in_profile(profile) and p.name not in pats:
            continue
        out.append(p)
    return out
