"""The ``jacbench`` command: list, run, summary (and more as they land)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from pathlib import Path



# Checked where they are used (cases.select, plan.check_dtypes), with one-line errors that list
# the choices; the parser does not import them, so report and summary run without torch.
PROFILES = "quick, standard or full"


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, naming the valid choices."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def fail(message: str) -> int:
    print(f"jacbench: error: {message}", file=sys.stderr)
    return 2


def positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def cpus() -> int:
    """The CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_threads() -> int:
    """Torch threads for a CPU sweep or ``advise``: one CPU fewer than this process may use.

    Measured on a 2-core machine (README, "Threads"): on a quiet machine 2 threads and 1 ran
    within 0.82-1.22x of each other (geometric mean 1.0); beside one other busy process, 2
    threads were 1.1-2.8x slower than 1 (a parallel op waits for its descheduled thread),
    while 1 thread lost at most a third. The CPU left free takes the runner, the system and
    a neighbour's process."""
    return max(1, cpus() - 1)


def devices(choice: str) -> list[str]:
    import torch

    have_cuda = torch.cuda.is_available()
    if choice == "cuda" and not have_cuda:
        raise ValueError(f"CUDA is not available here (torch {torch.__version__}, no GPU visible); use --device cpu")
    if choice == "all":
        return ["cpu"] + (["cuda"] if have_cuda else [])
    return [choice]


# --- list ----------------------------------------------------------------------------------

def cmd_list(args) -> int:
    import cases

    from . import plan as planning
    from . import strategies

    planning.load_plugins(args.plugin)
    chosen = cases.select(args.cases, tags=args.tags, profile=args.profile, kinds=args.kinds)
    names = planning.select_strategies(args.strategies, args.profile)
    if not args.strategies_only:
        print(f"{len(chosen)} problems (profile: the smallest profile that runs it)\n")
        width = max(len(p.name) for p in chosen) if chosen else 10
        print(f"{'problem':<{width}}  {'kind':<7} {'n':>6} {'m':>6}  {'profile':<8} {'ref':<8} tags / description")
        for p in chosen:
            ref = "analytic" if p.analytic else "float64"
            print(f"{p.name:<{width}}  {p.kind:<7} {p.n:>6} {p.m:>6}  {p.profile:<8} {ref:<8} "
                  f"[{', '.join(sorted(p.tags))}] {p.description}")
    if not args.problems_only:
        print(f"\n{len(names)} strategies\n")
        width = max(len(n) for n in names)
        for n in names:
            s = strategies.get(n)
            lacks = next((f for f in s.needs if not strategies.FEATURES[f]()), None)
            avail = f"  [unavailable: torch lacks {lacks}]" if lacks else ""
            kinds = [k for k in cases.KINDS if k in s.kinds or (k == "penalty" and s.unsupported(k) is None)]
            where = "" if "cpu" in s.devices else f" ({', '.join(s.devices)} only)"
            print(f"{n:<{width}}  {s.mode:<10} kinds: {', '.join(kinds)}{where}{avail}\n"
                  f"{'':<{width}}  {s.summary}\n{'':<{width}}  {s.cost}")
    return 0


# --- run -----------------------------------------------------------------------------------

def cmd_run(args) -> int:
    from . import plan as planning
    from . import runner
    from .journal import Journal, find_unfinished
    from .plan import Settings

    results_dir = Path(args.results_dir)
    plugins = planning.load_plugins(args.plugin)
    written = []
    if args.resume is not None:
        selection_given = any(getattr(args, k) for k in ("cases", "tags", "strategies", "shard", "dtype"))
        if selection_given or args.fresh:
            raise ValueError("--resume continues a run as it was planned; drop the selection options")
        if args.resume == "latest":
            found = find_unfinished(runner.partial_dir(results_dir))
            if not found:
                raise ValueError(f"no unfinished run under {runner.partial_dir(results_dir)}")
            journals = [found[0]]
        else:
            journals = [Path(args.resume)]
        for path in journals:
            planning.load_plugins(Journal.read(path).header.get("plugins"))
            print(f"resuming {path}", file=sys.stderr)
            written.append(runner.execute(path))
    else:
        profile = planning.profile(args.profile)
        settings = Settings(profile=args.profile, policy=profile.policy,
                            pair_timeout=args.pair_timeout or profile.pair_timeout,
                            threads=args.threads or default_threads(), seed=args.seed)
        shard = planning.parse_shard(args.shard) if args.shard else None
        selection = {k: getattr(args, k) for k in ("cases", "tags", "strategies", "dtype")}
        for device in devices(args.device):
            pairs = planning.make(args.profile, devices=[device], dtypes=args.dtype, problems=args.cases,
                                  tags=args.tags, strategy_patterns=args.strategies, shard=shard)
            if not written:
                _warn_if_busy(settings.threads)
            path, resumed = runner.prepare(pairs, settings, device, results_dir, selection,
                                           fresh=args.fresh, shard=args.shard, plugins=plugins)
            done = len(Journal.read(path).results)
            again = (f", then a pass timing them again for each of {settings.policy.visits - 1} more visits"
                     if settings.policy.visits > 1 else "")
            print(f"{'resuming' if resumed else 'running'} {len(pairs)} pairs on {device} "
                  f"({args.profile} profile, {settings.threads} thread{'s' if settings.threads != 1 else ''}{again}; "
                  f"the ETA is this pass's)"
                  + (f"; {done} already done, --fresh starts over" if resumed else ""), file=sys.stderr)
            written.append(runner.execute(path))
    for path in written:
        print(f"wrote {path}")
    if args.report:
        return _report(written, Path(args.report))
    return cmd_summary(argparse.Namespace(results=written))


def _warn_if_busy(threads: int) -> None:
    """Say so when other work is already keeping the CPUs busy: timings will be noisy."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return
    n = cpus()
    if load > n:
        print(f"note: the load average is {load:.1f} on {n} CPUs before the sweep starts; pairs whose timing "
              f"other work disturbs are timed again later, and never used if they stay disturbed"
              + (", and fewer --threads stall less" if threads > 1 else ""), file=sys.stderr)


def _report(paths, out: Path) -> int:
    from . import report

    report.write(paths, out)
    print(f"wrote {out}")
    return 0


# --- report, compare, matrix, advise: each module's ``command(args)`` ------------------------

def cmd_report(args) -> int:
    return _report(args.results, Path(args.output))


def cmd_compare(args) -> int:
    from . import compare

    return compare.command(args)


def cmd_matrix(args) -> int:
    from . import matrix

    return matrix.command(args)


def cmd_advise(args) -> int:
    from . import advisor

    return advisor.command(args)


# --- summary -------------------------------------------------------------------------------

def cmd_summary(args) -> int:
    from . import results, summary

    paths = args.results or results.latest()
    if not paths:
        raise ValueError("no results files given and none under results/")
    print(summary.render(results.load(paths), loads=[results.read(p)["jacbench"].get("load") or [] for p in paths]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="jacbench", description="Benchmark every way of computing Jacobians in PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("list", help="problems and strategies, with filters")
    p.add_argument("--cases", action="append", help="problem name globs, e.g. 'mlp-*'")
    p.add_argument("--tags", action="append", help="keep problems with any of these tags")
    p.add_argument("--kinds", action="append", help="keep problems of these kinds")
    p.add_argument("--profile", help=f"problems that this profile runs ({PROFILES})")
    p.add_argument("--strategies", action="append", help="strategy name globs")
    p.add_argument("--problems-only", action="store_true")
    p.add_argument("--strategies-only", action="store_true")
    p.add_argument("--plugin", action="append", help="import this module first (see `run --plugin`)")
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser("run", help="run a sweep; one results file per device")
    p.add_argument("--profile", default="standard", help=PROFILES)
    p.add_argument("--cases", action="append", help="problem name globs, e.g. 'mlp-*' (comma-separated or repeated)")
    p.add_argument("--tags", action="append", help="keep problems with any of these tags")
    p.add_argument("--strategies", action="append", help="strategy name globs")
    p.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    p.add_argument("--dtype", action="append", help="one or more of float32, float64, float16, bfloat16 (default float32)")
    p.add_argument("--threads", type=positive, help="torch threads (default: one fewer than the CPUs this process may use)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard", help="run shard i of n, e.g. 2/4")
    p.add_argument("--pair-timeout", type=float, help="seconds before a pair is stopped (default: the profile's)")
    p.add_argument("--resume", nargs="?", const="latest", help="finish an unfinished run (default: the latest)")
    p.add_argument("--fresh", action="store_true", help="start over even if this run was left unfinished")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--report", help="write an HTML report of this run to this path")
    p.add_argument("--plugin", action="append", help="import this module first: it may register problems "
                                                     "(cases.register) and strategies (bench.strategies.register)")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("summary", help="plain-text summary of result files")
    p.add_argument("results", nargs="*", help="results files (default: the newest under results/)")
    p.set_defaults(fn=cmd_summary)

    p = sub.add_parser("report", help="a self-contained HTML report of result files")
    p.add_argument("results", nargs="+", help="results files")
    p.add_argument("-o", "--output", default="reports/report.html")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("compare", help="compare result files row by row, with a significance test")
    p.add_argument("results", nargs="+", help="BASE.json NEW.json [MORE.json ...] (the first is the base)")
    p.add_argument("--threshold", type=float, default=0.10, help="smallest change that counts (default 0.10)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the test (default 0.05)")
    p.add_argument("--memory-threshold", type=float, default=0.20, help="memory change that is reported")
    p.add_argument("--fail-on", choices=("slower", "status", "any"), help="exit 1 on a significant regression")
    p.add_argument("-o", "--output", help="also write an HTML comparison report here")
    p.set_defaults(fn=cmd_compare)

    p = sub.add_parser("matrix", help="the same sweep in several torch environments, interleaved, then compared")
    p.add_argument("--torch-versions", help="space- or comma-separated torch versions, one venv each")
    p.add_argument("--python", action="append", metavar="NAME=PYTHON",
                   help="an existing interpreter as an environment (repeatable; instead of or besides versions)")
    p.add_argument("--profile", default="standard", help=PROFILES)
    p.add_argument("--cases", action="append")
    p.add_argument("--tags", action="append")
    p.add_argument("--strategies", action="append")
    p.add_argument("--dtype", action="append")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=positive, help="torch threads (default: one fewer than the CPUs this process may use)")
    p.add_argument("--rounds", type=int, default=4, help="interleave the environments in this many rounds")
    p.add_argument("--confirm", type=int, default=1, metavar="N",
                   help="re-measure each significant change N more times, interleaved; keep it only if it "
                        "comes back every time (0: off)")
    p.add_argument("--venvs-dir", default=".venvs")
    p.add_argument("--results-dir", default="results/matrix")
    p.add_argument("-o", "--output", default="reports/matrix.html")
    p.set_defaults(fn=cmd_matrix)

    p = sub.add_parser("advise", help="which strategy is fastest for YOUR function: measured, gated, ranked")
    p.add_argument("target", help="module:function (or module:Class for an nn.Module built without arguments)")
    p.add_argument("--input-shape", required=True, help="shape of one input, e.g. 64 or 3,32,32")
    p.add_argument("--batch", type=int, help="per-sample Jacobians over a batch of this size")
    p.add_argument("--wrt", choices=("input", "params"), default="input")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", default="float32", help="float32, float64, float16 or bfloat16")
    p.add_argument("--strategies", action="append")
    p.add_argument("--threads", type=positive, help="torch threads (default: one fewer than the CPUs this process may use)")
    p.add_argument("-o", "--output", help="also write an HTML report here")
    p.set_defaults(fn=cmd_advise)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .journal import JournalError, RunError, Terminated
    from .results import ResultsError, ResultsWarning

    plain = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *rest, **kw: (  # ours are one line, like errors
        f"jacbench: warning: {message}\n" if issubclass(category, ResultsWarning) else plain(message, category, *rest, **kw))
    try:
        return args.fn(args)
    except (ValueError, ResultsError, JournalError, RunError) as e:
        return fail(str(e))
    except KeyboardInterrupt as e:
        print("\ninterrupted; run the same command again (or `jacbench run --resume`) to finish", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
