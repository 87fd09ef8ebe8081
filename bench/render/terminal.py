"""Text for a terminal: tables and paragraphs that fit its width (at most :data:`WIDTH`
columns), wrapped between words, never cut. Tables are rich's. No torch."""

from __future__ import annotations

import io
import re
import shutil
import sys
import textwrap

import pandas as pd

#: The widest the text gets, however wide the terminal: lines longer than this are hard to read.
WIDTH = 100


def is_terminal(stream) -> bool:
    return hasattr(stream, "isatty") and stream.isatty()


def width(stream=None) -> int:
    """The columns to fill: the terminal's, up to :data:`WIDTH`; :data:`WIDTH` off a terminal
    (``stream``: standard output by default)."""
    stream = sys.stdout if stream is None else stream
    if is_terminal(stream):
        return max(20, min(WIDTH, shutil.get_terminal_size().columns))
    return WIDTH


def paragraph(text: str, columns: int = WIDTH, indent: str = "", then: str | None = None) -> str:
    """``text`` wrapped between words, each line at most ``columns`` wide (a word wider than
    that, a path say, stands on a line of its own), its first line indented by ``indent`` and
    the others by ``then`` (default: the same)."""
    return textwrap.fill(text, columns, initial_indent=indent, subsequent_indent=indent if then is None else then,
                         break_long_words=False, break_on_hyphens=False)


def fit(text: str, columns: int = WIDTH) -> str:
    """``text`` with each line wider than ``columns`` wrapped between words, keeping its indent."""
    out = []
    for line in text.splitlines():
        indent = line[:len(line) - len(line.lstrip())]
        out.append(line if len(line) <= columns else paragraph(line.strip(), columns, indent))
    return "\n".join(out)


def say(text: str, stream=None) -> None:
    """Write ``text`` to ``stream`` (standard error by default), fitted to the terminal's width
    where it is one; a log gets it on one line, for grep."""
    stream = sys.stderr if stream is None else stream
    stream.write((fit(text, width(stream)) if is_terminal(stream) else text) + "\n")
    stream.flush()


#: What a table cell is never split inside: an interval in brackets or parentheses, a number
#: with its unit of time or memory, or else a word.
ATOM = re.compile(r"\[[^\]]*\]|\([^)]*\)"  # an interval
                  r"|[-+~]?\d[\d.,]*(?:e[-+]?\d+)?\s(?:ns|us|ms|s|B|KiB|MiB|GiB|KB|MB|GB)(?!\w)"  # a number and unit
                  r"|\S+")


def _wrapped(text: str, width: int, split=ATOM.findall) -> str:
    """``text`` in lines of at most ``width``, broken only between its atoms (``split``: by
    :data:`ATOM`, or words); an atom wider than that stands on a line of its own."""
    lines: list[str] = []
    for atom in split(text):
        if lines and len(lines[-1]) + 1 + len(atom) <= width:
            lines[-1] += " " + atom
        else:
            lines.append(atom)
    return "\n".join(lines)


def table(frame: pd.DataFrame, columns: int = WIDTH, *, index: bool = False, keep=(), optional=()) -> str:
    """``frame``'s cells as text in a table at most ``columns`` wide: a column too wide wraps
    its cells between atoms (words, a number with its unit, an interval: :data:`ATOM`), except
    the columns named in ``keep`` (names of problems and strategies), which never wrap; columns
    of numbers are right-aligned. Where even the atoms do not fit, blank columns go, then the
    ``optional`` ones, last first, and a line under the table names them: a cell is never split
    into a column of letters, nor a number from its unit, nor an interval in two. Only where the
    columns left still do not fit do cells wrap between words, an interval after its comma."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    if index:
        frame = frame.reset_index()
    frame = frame.astype(str)

    split = ATOM.findall

    def least(name, c) -> int:
        return max(len(w) for text in (*frame[c], str(name)) for w in (split(text) if name not in keep else [text])
                   or [""])

    def fits(cols) -> bool:
        return sum(least(str(c), c) for c in cols) + 3 * (len(cols) - 1) <= columns

    shown = list(frame.columns)
    blank = [c for c in shown if not frame[c].str.strip().any()]
    left_out = []
    for c in blank[::-1] + [c for c in list(optional)[::-1] if c in shown and c not in blank]:
        if fits(shown):
            break
        shown.remove(c)
        left_out.append(str(c))
    if not fits(shown):
        split = str.split
    frame = frame[shown]
    names = [str(c) for c in frame.columns]
    natural = [max([len(name), *frame[c].str.len()]) for name, c in zip(names, frame.columns)]
    widths = _shrink(natural, [least(name, c) for name, c in zip(names, frame.columns)],
                     columns - 3 * (len(names) - 1))  # a rule and a space each side
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name, c, w in zip(names, frame.columns, widths):
        numeric = len(frame) > 0 and frame[c].str.match(r"^[-+~]?[\d.]").mean() > 0.5
        t.add_column(name, justify="right" if numeric else "left", width=w, no_wrap=True,
                     overflow="fold")  # where even the atoms do not fit: split, never cut short
    wrapping = [name not in keep for name in names]
    for row in frame.itertuples(index=False):
        t.add_row(*(_wrapped(cell, w, split) if wrap else cell for cell, w, wrap in zip(row, widths, wrapping)))
    out = io.StringIO()
    Console(file=out, width=columns, color_system=None, force_terminal=False, highlight=False).print(t)
    text = "\n".join(line.rstrip() for line in out.getvalue().splitlines())
    said = [c for c in left_out if c not in [str(b) for b in blank]]
    if said:
        text += "\n" + paragraph(f"(left out at {columns} columns: {', '.join(said)})", columns)
    return text


def _shrink(widths: list[int], least: list[int], room: int) -> list[int]:
    """Column widths that fit ``room``: the widest that can give, one column at a time, down
    to each column's ``least`` (its longest word)."""
    widths = list(widths)
    while sum(widths) > room:
        give = max(range(len(widths)), key=lambda i: widths[i] - least[i])
        if widths[give] <= least[give]:
            break  # the words alone are wider than the room
        widths[give] -= 1
    return widths
