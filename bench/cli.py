"""The ``jacbench`` command: list, run, summary (and more as they land)."""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import math
import os
import signal
import sys
import warnings
from dataclasses import replace
from pathlib import Path

# Checked where they are used (cases.select, plan.check_dtypes), with one-line errors that list
# the choices; the parser does not import them, so report and summary run without torch.
PROFILES = "quick, standard or full"


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, naming the valid choices."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


#: The exit status of a fault of jacbench's own (EX_SOFTWARE); a user's fault exits with 2.
INTERNAL = 70


def fail(message: str) -> int:
    print(f"jacbench: error: {message}", file=sys.stderr)
    return 2


def positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def seconds(text: str) -> float:
    """An argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes seconds, such as 120, not {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def globs(text: str) -> str:
    """An argparse type: name globs, not an empty string (which would mean no filter)."""
    if not text.strip(" ,"):
        raise argparse.ArgumentTypeError("takes name globs such as 'mlp-*', not an empty string")
    return text


# --- list ----------------------------------------------------------------------------------

def cmd_list(args) -> int:
    import cases

    from bench import kinds, strategies
    from bench.sweep import plan as planning

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
            handled = [k for k, kind in kinds.KINDS.items() if kind.refuses(s) is None]
            where = "" if "cpu" in s.devices else f" ({', '.join(s.devices)} only)"
            print(f"{n:<{width}}  {s.mode:<10} kinds: {', '.join(handled)}{where}{avail}\n"
                  f"{'':<{width}}  {s.summary}\n{'':<{width}}  {s.cost}")
    return 0


# --- run -----------------------------------------------------------------------------------

def cmd_run(args) -> int:
    from bench.analysis import files
    from bench.analysis.journal import Journal, find_unfinished, running
    from bench.render import terminal
    from bench.sweep import machine, plan as planning, runner

    results_dir = Path(args.results_dir)
    plugins = planning.load_plugins(args.plugin)
    if args.report:
        files.writable(args.report)  # before the sweep, not after it
    written = []
    if args.executor:  # a job array, a shard per task (bench.sweep.slurm)
        from bench.sweep import slurm

        written = slurm.farm(args)
    elif args.resume is not None:
        selection_given = any(getattr(args, k) for k in ("cases", "tags", "strategies", "shard", "dtype"))
        if selection_given or args.fresh:
            raise ValueError("--resume continues a run as it was planned; drop the selection options")
        if args.resume == "latest":
            found = find_unfinished(runner.partial_dir(results_dir))
            idle = [p for p in found if not running(p)]
            if not idle:
                raise ValueError(f"no unfinished run under {runner.partial_dir(results_dir)}"
                                 + (f" that is not running now ({len(found)} running)" if found else ""))
            journals = idle[:1]
        else:
            journals = [Path(args.resume)]
        for path in journals:
            planning.load_plugins(Journal.read(path).header.get("plugins"))
            print(f"resuming {path}", file=sys.stderr)
            written.append(runner.execute(path, live=False if args.verbose else None))
    else:
        files.directory(results_dir)  # before planning, and before the note on the load
        settings = planning.settings(args.profile, timing_text=args.timing, pair_timeout=args.pair_timeout,
                                     threads=args.threads, seed=args.seed)
        shard = planning.parse_shard(args.shard) if args.shard else None
        selection = {k: getattr(args, k) for k in ("cases", "tags", "strategies", "dtype")}
        for device in machine.devices(args.device):
            pairs = planning.make(args.profile, devices=[device], dtypes=args.dtype, problems=args.cases,
                                  tags=args.tags, strategy_patterns=args.strategies, shard=shard)
            if not written:
                _warn_if_busy(settings.threads)
            path, resumed = runner.prepare(pairs, settings, device, results_dir, selection,
                                           fresh=args.fresh, shard=args.shard, plugins=plugins)
            others = [p for p in find_unfinished(runner.partial_dir(results_dir)) if p != path and running(p)]
            if others:
                terminal.say(f"note: {len(others)} other run{'s are' if len(others) > 1 else ' is'} going on in "
                             f"{results_dir} ({others[0].name}); runs that share the machine disturb each other's "
                             f"timings")
            done = len(Journal.read(path).results)
            again = (f", then a pass timing them again for each of {settings.policy.visits - 1} more visits"
                     if settings.policy.visits > 1 else "")
            terminal.say(f"{'resuming' if resumed else 'running'} {len(pairs)} pairs on {device} "
                         f"({args.profile} profile, {settings.threads} thread{'s' if settings.threads != 1 else ''}"
                         f"{again}; the ETA is this pass's)"
                         + (f"; {done} already done, --fresh starts over" if resumed else ""))
            written.append(runner.execute(path, live=False if args.verbose else None))
    for path in written:
        print(f"wrote {path}")
    if args.report:
        return _report(written, Path(args.report))
    return cmd_summary(argparse.Namespace(results=written))


def _warn_if_busy(threads: int) -> None:
    """Say so when other work is already keeping the CPUs busy: timings will be noisy."""
    from bench.render import terminal
    from bench.sweep import machine

    try:
        load = os.getloadavg()[0]
    except OSError:
        return
    n = machine.cpus()
    if load > n:
        terminal.say(f"note: the load average is {load:.1f} on {n} CPUs before the sweep starts; pairs whose timing "
                     f"other work disturbs are timed again later, and never used if they stay disturbed"
                     + (", and fewer --threads stall less" if threads > 1 else ""))


def _report(paths, out: Path) -> int:
    from bench.analysis import files
    from bench.render import report

    files.writable(out)  # before the work of rendering
    report.write(paths, out)
    print(f"wrote {out}")
    return 0


# --- report, compare, matrix, advise: each module's ``command(args)`` ------------------------

def cmd_report(args) -> int:
    return _report(args.results, Path(args.output))


def cmd_compare(args) -> int:
    from bench.analysis import compare, files
    from bench.render import compare as shown, terminal

    if args.output:
        files.writable(args.output)
    comparison = compare.compare(args.results, threshold=args.threshold, alpha=args.alpha,
                                 memory_threshold=args.memory_threshold)
    for w in comparison.warnings:
        terminal.say(f"jacbench: warning: {w}")
    print(shown.render_text(comparison, warnings=False, columns=terminal.width()))
    if args.output:
        print(f"wrote {shown.write_html(comparison, Path(args.output))}")
    if args.fail_on:
        bad = compare.failures(comparison, args.fail_on)
        if len(bad):
            print(f"jacbench: {len(bad)} regression{'s' if len(bad) != 1 else ''} (--fail-on {args.fail_on}), "
                  f"e.g. {bad.iloc[0]['problem']} {bad.iloc[0]['strategy']}", file=sys.stderr)
            return 1
    return 0


def cmd_matrix(args) -> int:
    from bench.sweep import matrix

    return matrix.command(args)


def load_target(target: str, path=()):
    """``module:attr`` or ``path/to/file.py:attr`` -> the object; a module is looked for in the
    directories ``path``, then the current directory, then ``sys.path`` (``PYTHONPATH``)."""
    import torch

    from bench.measure.pair import one_line

    if ":" not in target:
        raise ValueError(f"advise takes MODULE:FUNCTION (e.g. mymodel:f), not {target!r}")
    where, _, attr = target.rpartition(":")
    for directory in [os.getcwd(), *reversed(path)]:  # a console script does not put the cwd on the path
        if not Path(directory).is_dir():
            raise ValueError(f"--path {directory}: no such directory")
        if str(Path(directory).absolute()) not in sys.path:
            sys.path.insert(0, str(Path(directory).absolute()))
    try:
        if where.endswith(".py"):
            spec = importlib.util.spec_from_file_location(Path(where).stem, where)
            if spec is None or not Path(where).is_file():
                raise ImportError(f"no file {where}")
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
        else:
            mod = importlib.import_module(where)
    except ModuleNotFoundError as exc:
        if exc.name != where.partition(".")[0]:
            raise ValueError(f"cannot import {where!r}: {one_line(exc)}") from None
        raise ValueError(f"cannot import {where!r}: no such module in the current directory, a --path directory "
                         f"or PYTHONPATH") from None
    except Exception as exc:  # noqa: BLE001 - the user's module: one line
        raise ValueError(f"cannot import {where!r}: {one_line(exc)}") from None
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(mod) if not n.startswith("_") and callable(getattr(mod, n)))
            raise ValueError(f"{where} has no {attr!r}; callables there: {', '.join(public[:20]) or 'none'}")
        obj = getattr(obj, part)
    if isinstance(obj, type):
        if not issubclass(obj, torch.nn.Module):
            raise ValueError(f"{target} is a class but not an nn.Module; give a function or a module class")
        try:
            obj = obj()
        except TypeError as exc:
            raise ValueError(f"{target} cannot be built without arguments ({exc}); "
                             "give a module-level function or instance instead") from None
    if not callable(obj):
        raise ValueError(f"{target} is a {type(obj).__name__}, not a function or module")
    return obj


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        shape = ()
    if not shape or any(v <= 0 for v in shape):
        raise ValueError(f"--input-shape takes positive sizes such as 64 or 3,32,32, not {text!r}")
    return shape


def build_inputs(obj, shape, batch, wrt, device, dtype, seed: int = 0):
    """The function, inputs, kind and float64 twin that ``jacbench advise`` measures."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    full = ((batch,) if batch else ()) + shape
    x64 = torch.randn(full, generator=gen, dtype=torch.float64)
    x = x64.to(device, dtype)
    is_module = isinstance(obj, torch.nn.Module)
    if is_module:
        obj = obj.to(device, dtype).eval()
    if wrt == "params":
        if not is_module:
            raise ValueError("--wrt params needs an nn.Module (module:Class or an instance)")
        names = [k for k, p in obj.named_parameters() if p.is_floating_point()]
        if not names:
            raise ValueError("the module has no floating-point parameters")
        obj64 = copy.deepcopy(obj).to("cpu", torch.float64)

        def over(module, inp):
            def f(*params):
                return torch.func.functional_call(module, dict(zip(names, params)), (inp,))
            f.__name__ = f"{type(module).__name__}-params"
            return f

        params = tuple(dict(obj.named_parameters())[k].detach() for k in names)
        params64 = tuple(dict(obj64.named_parameters())[k].detach() for k in names)
        return over(obj, x), params, "params", (over(obj64, x64), params64)
    return obj, (x,), ("batched" if batch else "vector"), None


def cmd_advise(args) -> int:
    """``jacbench advise MODULE:FUNCTION --input-shape ...``: print the ranked table and the
    recommendation; 0 with a recommendation, 1 where the function cannot be measured."""
    import torch

    from bench import advisor
    from bench.analysis import files
    from bench.render import terminal
    from bench.sweep import machine, plan as planning
    from bench.measure.pair import Settings

    machine.devices(args.device)  # a one-line error where CUDA is asked for and absent
    if args.output:
        files.writable(args.output)
    torch.set_num_threads(args.threads or machine.default_threads())
    timing = planning.timing(args.timing)
    for key in set(timing) & {"visits", "retimes"}:
        raise ValueError(f"--timing {key} applies to sweeps; advise times its strategies together, in one pass")
    settings = Settings(profile="advise", policy=replace(advisor.POLICY, **timing), threads=torch.get_num_threads())
    obj = load_target(args.target, args.path or ())
    dtype = getattr(torch, args.dtype)
    if args.batch is not None and args.batch <= 0:
        raise ValueError(f"--batch takes a positive size, not {args.batch}")
    fn, inputs, kind, float64 = build_inputs(obj, parse_shape(args.input_shape), args.batch, args.wrt, args.device,
                                             dtype)
    names = advisor.candidates(kind, args.strategies, args.device)
    threads = torch.get_num_threads()
    terminal.say(f"measuring {len(names)} strategies on {args.target} ({kind}, {args.device}, {args.dtype}, "
                 f"{threads} thread{'s' if threads != 1 else ''}); compiled ones take seconds to compile")

    def progress(row) -> None:
        print(advisor.progress_line(row), file=sys.stderr)

    advice = advisor.advise(fn, *inputs, strategies=args.strategies, kind=kind, float64=float64, name=args.target,
                            settings=settings, progress=progress, output=args.output)
    print(advice)
    if args.output:
        print(f"wrote {args.output}")
    return 0 if advice.best or advice.fastest else 1


# --- summary -------------------------------------------------------------------------------

def cmd_summary(args) -> int:
    from bench.analysis import results
    from bench.render import summary, terminal

    paths = args.results or results.latest()
    if not paths:
        raise ValueError("no results files given and none under results/")
    print(summary.render(results.load(paths), loads=[results.read(p)["jacbench"].get("load") or [] for p in paths],
                         columns=terminal.width()))
    return 0


def cmd_rules(args) -> int:
    import pandas as pd

    from bench.analysis import results, rules
    from bench.analysis.formats import fmt_pct, fmt_ratio
    from bench.render import terminal

    paths = args.results or results.latest()
    if not paths:
        raise ValueError("no results files given and none under results/")
    frame = results.load(paths)
    scores = rules.summary(rules.regrets(frame))
    if scores.empty:
        raise ValueError("no problem in these files has a timed exact strategy to score the rules on")
    for key, g in scores.groupby(["machine", "torch", "device", "dtype"], sort=False):
        print(f"{' '.join(map(str, key))}: {g['problems'].iloc[0]} problems with a timed exact strategy")
        shown = pd.DataFrame({"rule": g["rule"], "solved": [f"{a}/{b}" for a, b in zip(g["solved"], g["problems"])],
                              "regret": g["geomean"].map(fmt_ratio), "worst": g["worst"].map(fmt_ratio),
                              "<= 1.1x": g["within_10pct"].map(fmt_pct), "failed": g["failed"],
                              "worst at": [w.split(" (")[0] if isinstance(w, str) else "-" for w in g["worst_at"]]})
        print(terminal.table(shown, columns=terminal.width(), keep=("rule", "worst at")))
    if args.fit:
        model = rules.Predictor.fit(frame)
        print(f"the predictor, fitted on {len(model.points)} problems, is in {model.save(Path(args.fit))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="jacbench", description="Benchmark every way of computing Jacobians in PyTorch.")
    parser.add_argument("--debug", action="store_true", default=bool(os.environ.get("JACBENCH_DEBUG")),
                        help="show the traceback of a failure (also: JACBENCH_DEBUG=1)")
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
    p.add_argument("--cases", action="append", type=globs,
                   help="problem name globs, e.g. 'mlp-*' (comma-separated or repeated)")
    p.add_argument("--tags", action="append", help="keep problems with any of these tags")
    p.add_argument("--strategies", action="append", help="strategy name globs")
    p.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    p.add_argument("--dtype", action="append", help="one or more of float32, float64, float16, bfloat16 (default float32)")
    p.add_argument("--threads", type=positive, help="torch threads (default: one fewer than the CPUs this process may use)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard", help="run shard i of n, e.g. 2/4")
    p.add_argument("--pair-timeout", type=seconds, help="seconds before a pair is stopped (default: the profile's)")
    p.add_argument("--timing", metavar="KEY=VALUE,...",
                   help="replace the profile's timing policy in part, e.g. retimes=0,max_time=0.05 (keys: warmup, "
                        "visits, retimes, min_rounds, max_rounds, max_time, precision, min_round_time)")
    p.add_argument("--resume", nargs="?", const="latest", help="finish an unfinished run (default: the latest)")
    p.add_argument("--fresh", action="store_true", help="start over even if this run was left unfinished")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--report", help="write an HTML report of this run to this path")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="one line per pair instead of a live bar (as when the output is not a terminal)")
    p.add_argument("--plugin", action="append", help="import this module first: it may register problems "
                                                     "(cases.register) and strategies (bench.strategies.register)")
    g = p.add_argument_group("a job array, a shard per task, through submitit (pip install jacbench[slurm])")
    g.add_argument("--executor", choices=("slurm", "local"),
                   help="run the sweep as a SLURM job array, or as local processes through the same machinery")
    g.add_argument("--tasks", type=positive, default=1, help="split the plan into this many shards, one task each")
    g.add_argument("--partition", action="append",
                   help="a SLURM partition (repeat it: the same plan on each, one results frame keyed by partition)")
    g.add_argument("--gpus-per-task", type=int, help="GPUs per task (default: 1 with --device cuda, else 0)")
    g.add_argument("--time-limit", type=positive, metavar="MINUTES",
                   help="per task (default: its pairs x the per-pair limit x the visits, plus 5 minutes)")
    g.add_argument("--account", help="SLURM account")
    g.add_argument("--qos", help="SLURM quality of service")
    g.add_argument("--array-parallelism", type=positive, default=256, help="tasks running at once, at most")
    g.add_argument("--sbatch", action="append", metavar="FLAGS",
                   help="more sbatch options, e.g. --sbatch='--constraint=h100 --exclusive'")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("summary", help="plain-text summary of result files")
    p.add_argument("results", nargs="*", help="results files (default: the newest under results/)")
    p.set_defaults(fn=cmd_summary)

    p = sub.add_parser("rules", help="score the picking rules and the predictor by their regret (NOTE: [Regret])")
    p.add_argument("results", nargs="*", help="results files (default: the newest under results/)")
    p.add_argument("--fit", metavar="PATH", help="also fit the predictor on these files and save it here (the "
                   "package's own is bench/analysis/predictor.json)")
    p.set_defaults(fn=cmd_rules)

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
    p.add_argument("--timing", metavar="KEY=VALUE,...", help="replace the profile's timing policy in part (see run)")
    p.add_argument("--confirm", type=int, default=1, metavar="N",
                   help="re-measure each significant change N more times, interleaved; keep it only if it "
                        "comes back every time (0: off)")
    p.add_argument("--venvs-dir", default=".venvs")
    p.add_argument("--results-dir", default="results/matrix")
    p.add_argument("-o", "--output", default="reports/matrix.html")
    p.set_defaults(fn=cmd_matrix)

    p = sub.add_parser("advise", help="which strategy is fastest for YOUR function: measured, gated, ranked")
    p.add_argument("target", help="module:function (or module:Class for an nn.Module built without arguments)")
    p.add_argument("--path", action="append", metavar="DIR",
                   help="look for the module in this directory first (the current directory and PYTHONPATH follow)")
    p.add_argument("--input-shape", required=True, help="shape of one input, e.g. 64 or 3,32,32")
    p.add_argument("--batch", type=int, help="per-sample Jacobians over a batch of this size")
    p.add_argument("--wrt", choices=("input", "params"), default="input")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64", "float16", "bfloat16"))
    p.add_argument("--strategies", action="append")
    p.add_argument("--threads", type=positive, help="torch threads (default: one fewer than the CPUs this process may use)")
    p.add_argument("-o", "--output", help="also write an HTML report here")
    p.add_argument("--timing", metavar="KEY=VALUE,...", help="replace the advisor's timing policy in part (see run)")
    p.set_defaults(fn=cmd_advise)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from bench.analysis.journal import JournalError, RunError, Terminated
    from bench.analysis.results import ResultsError, ResultsWarning

    plain = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *rest, **kw: (  # ours are one line, like errors
        f"jacbench: warning: {message}\n" if issubclass(category, ResultsWarning) else plain(message, category, *rest, **kw))
    try:
        return args.fn(args)
    except (ValueError, ResultsError, JournalError, RunError, OSError) as e:
        if args.debug:
            raise
        return fail(_one_line(e))
    except KeyboardInterrupt as e:
        resume = f"jacbench run --executor {args.executor} --resume" if getattr(args, "executor", None) else \
            "jacbench run --resume"
        print(f"\ninterrupted; run the same command again (or `{resume}`) to finish", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
    except Exception as e:  # a fault of jacbench's own: one line too, and how to see the rest
        if args.debug:
            raise
        print(f"jacbench: internal error: {type(e).__name__}: {_one_line(e)}; this is a bug in jacbench: "
              f"run again with --debug for the traceback, and report it", file=sys.stderr)
        return INTERNAL
    finally:
        warnings.formatwarning = plain


def _one_line(e: Exception) -> str:
    """A failure as one line: an OS error names the path it concerns."""
    if isinstance(e, OSError) and e.strerror:
        where = f"{e.filename} -> {e.filename2}" if e.filename2 else e.filename
        return f"{where}: {e.strerror}" if where else e.strerror
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
