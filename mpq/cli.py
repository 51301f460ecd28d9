"""The ``mpq`` command line: each command is one call into the Python API.

Errors mpq raises on bad input print one ``error:`` line (or a few) and exit with code 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Optional

from .errors import DocumentError, MpqError

COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]] = {}


def command(name: str, help: str, add_args: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    """Register ``mpq NAME``: ``add_args`` declares its arguments, the decorated function does the work."""

    def deco(run):
        COMMANDS[name] = (add_args, run, help)
        return run

    return deco


# ----------------------------------------------------------------------------------------------
# shared argument groups


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise DocumentError(f"--{what}: expected comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise DocumentError(f"--{what}: expected positive integers, got {text!r}")
    return values


def candidates_from_args(args: argparse.Namespace):
    from .cost import DEFAULT_BITS, CandidateSet

    bits = _int_list(args.bits, "bits") if args.bits else list(DEFAULT_BITS)
    if any(b > 16 for b in bits):
        raise DocumentError(f"--bits: bit-widths go up to 16 (16 keeps the layer in float), got {args.bits}")
    groups: list[Optional[int]] = []
    for g in (args.group_sizes or "none").split(","):
        g = g.strip().lower()
        if g in ("none", "channel", "per-channel", ""):
            groups.append(None)
        else:
            groups.extend(_int_list(g, "group-sizes"))
    formats = [f.strip() for f in (args.formats or "int").split(",") if f.strip()]
    known = {"int", "fp", "fp8_e4m3", "fp8_e5m2", "fp4_e2m1"}
    for f in formats:
        if f not in known:
            raise DocumentError(f"--formats: unknown format {f!r}; expected some of {sorted(known)}")
    prune: list[float | str] = []
    for p in (args.prune or "0").split(","):
        p = p.strip()
        if p == "2:4":
            prune.append("2:4")
            continue
        try:
            r = float(p)
        except ValueError:
            raise DocumentError(f"--prune: expected ratios in [0, 1) or '2:4', got {p!r}") from None
        if not 0 <= r < 1:
            raise DocumentError(f"--prune: ratio {r} is outside [0, 1)")
        prune.append(r)
    a_bits: list[Optional[int]] = [None]
    if args.a_bits:
        a_bits = [None if a >= 16 else a for a in _int_list(args.a_bits, "a-bits")]
    sym = {"sym": [True], "asym": [False], "both": [True, False]}[args.symmetric]
    return CandidateSet(bits=bits, group_sizes=groups, formats=formats, symmetric=sym, prune=prune, a_bits=a_bits)


def add_candidate_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("candidate options")
    g.add_argument("--bits", help="weight bit-widths to consider, e.g. 2,3,4,6,8 (16 = keep in float); default 2,3,4,5,6,8,16")
    g.add_argument("--group-sizes", help="'none' (per output channel) and/or group sizes, e.g. none,128")
    g.add_argument("--formats", help="int, fp (fp8 e4m3 / fp4 e2m1) or explicit fp8_e4m3, fp8_e5m2, fp4_e2m1; default int")
    g.add_argument("--symmetric", choices=["sym", "asym", "both"], default="sym", help="integer grid; default sym")
    g.add_argument("--prune", help="pruning ratios and/or 2:4, e.g. 0,0.25,0.5,2:4; default 0")
    g.add_argument("--a-bits", help="activation bit-widths for BitOps and fake-quantization, e.g. 8,16")


def add_model_args(p: argparse.ArgumentParser, optional: bool = False) -> None:
    p.add_argument("model", nargs="?" if optional else None, default=None,
                   help="module.path:function returning an mpq.Workload, or a local Hugging Face directory"
                   + ("; default: the embedded digits example" if optional else ""))
    p.add_argument("--calib", help="calibration text for Hugging Face models: .txt (one sample a line), .jsonl or .json "
                   "(a text field), .parquet, or a datasets.save_to_disk directory")
    g = p.add_argument_group("Hugging Face models")
    g.add_argument("--calib-field", default="text", help="the text field / column of --calib (default text)")
    g.add_argument("--samples", type=int, help="calibration samples to use (default 64)")
    g.add_argument("--seq-len", type=int, help="tokens per sample (default 128, or the model's positions if fewer)")
    g.add_argument("--batch-size", type=int, help="samples per calibration batch (default 4)")
    g.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="weight dtype to load the model in (default float32)")
    g.add_argument("--trust-remote-code", action="store_true", help="run the model directory's own modeling code")


def add_estimator_args(p: argparse.ArgumentParser, default: Optional[str] = "hessian-trace") -> None:
    g = p.add_argument_group("sensitivity")
    g.add_argument("--estimator", default=default, help=f"sensitivity estimator (default {default}); see `mpq estimators`")
    g.add_argument("--probes", type=int, help="probe / iteration budget of the estimator")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="cpu", help="cpu or cuda")
    g.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="any other estimator setting")
    g.add_argument("--no-cache", action="store_true", help="recompute instead of reading the sensitivity cache")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def estimator_settings(args: argparse.Namespace) -> dict:
    settings: dict = {"seed": args.seed, "device": args.device, "quiet": args.quiet}
    if args.probes is not None:
        if args.probes <= 0:
            raise DocumentError(f"--probes must be positive, got {args.probes}")
        settings["probes"] = args.probes
    settings.update(parse_params(args.param, "--param"))
    return settings


def parse_params(items: list[str], flag: str) -> dict:
    """``KEY=VALUE`` settings; values are read as JSON when they parse (numbers, true/false), else as text."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DocumentError(f"{flag} {item!r}: expected KEY=VALUE")
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = value
    return out


def load(args: argparse.Namespace):
    from .workload import load_workload

    hf = {"max_samples": getattr(args, "samples", None), "max_length": getattr(args, "seq_len", None),
          "batch_size": getattr(args, "batch_size", None), "dtype": getattr(args, "dtype", None),
          "device": getattr(args, "device", None), "calib_field": getattr(args, "calib_field", None),
          "trust_remote_code": getattr(args, "trust_remote_code", False) or None}
    return load_workload(args.model, calib=getattr(args, "calib", None), hf={k: v for k, v in hf.items() if v is not None})


def write_or_print(doc, path: Optional[str]) -> None:
    from .schema import dump_document, save_document

    if path and path != "-":
        save_document(doc, path)
        print(f"wrote {path}")
    else:
        sys.stdout.write(dump_document(doc))


def fmt_table(rows: list[list], header: list[str]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for j, r in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if j and _numeric(c) else c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _numeric(c: str) -> bool:
    try:
        float(c.replace(",", ""))
        return True
    except ValueError:
        return False


def print_plan(plan, table=None) -> None:
    rows = []
    for l in plan.layers:
        sens = table.layers.get(l.name) if table is not None else None
        rows.append([
            l.name, f"{l.params:,}", l.option, l.w_bits, "-" if l.group_size is None else l.group_size, f"{l.bytes:,}",
            f"{sens.score:.4g}" if sens is not None else "", f"{l.distortion:.4g}",
        ])
    print(fmt_table(rows, ["layer", "params", "option", "bits", "group", "bytes", "sensitivity", "distortion"]))
    t, s = plan.totals, plan.solver
    limits = ", ".join(f"{k}={v:g}" for k, v in plan.constraints.items())
    print(f"\ntotal {t.bytes:,} bytes, {t.avg_bits:.3f} avg bits, predicted distortion {t.distortion:.4g}  (budget: {limits})")
    gap = "" if s.gap is None else f", gap {s.gap:.2g}"
    print(f"solver {s.name}: {s.status}{gap}, {s.seconds:.3f} s")


# ----------------------------------------------------------------------------------------------
# commands


def _layers_args(p):
    add_model_args(p, optional=True)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


@command("layers", "list the quantizable layers of a model", _layers_args)
def cmd_layers(args) -> int:
    from .graph import discover

    graph = discover(load(args))
    if args.json:
        print(json.dumps({"layers": [l.as_dict() for l in graph], "edges": graph.adjacent_pairs(), "method": graph.method}, indent=2))
        return 0
    rows = [[l.name, l.kind, "x".join(map(str, l.shape)), f"{l.params:,}", f"{l.macs:,}"] for l in graph]
    print(fmt_table(rows, ["layer", "kind", "shape", "params", "MACs/sample"]))
    print(f"\n{len(graph)} layers, {sum(l.params for l in graph):,} weights; data-flow edges ({graph.method}): "
          + (", ".join(f"{a} -> {b}" for a, b in graph.adjacent_pairs()) or "none"))
    return 0


@command("estimators", "list the sensitivity estimators")
def cmd_estimators(args) -> int:
    from mpq.sensitivity.base import ESTIMATORS, available_estimators

    for name in available_estimators():
        doc = (ESTIMATORS[name].__doc__ or "").strip().splitlines()
        print(f"{name:18s} {doc[0] if doc else ''}")
    return 0


@command("solvers", "list the solvers")
def cmd_solvers(args) -> int:
    from mpq.solvers.base import SOLVERS, available_solvers

    for name in available_solvers():
        cls = SOLVERS.get(name)
        doc = (cls.__doc__ or "").strip().splitlines() if cls else ["pick the fastest exact solver for the problem"]
        print(f"{name:14s} {doc[0] if doc else ''}")
    return 0


def _sens_args(p):
    add_model_args(p, optional=True)
    add_estimator_args(p)
    add_candidate_args(p)
    p.add_argument("-o", "--output", help="output file (default: stdout)")


@command("sensitivity", "estimate per-layer sensitivities and write an mpq.sensitivity/v1 table", _sens_args)
def cmd_sensitivity(args) -> int:
    from .pipeline import sensitivities

    workload = load(args)
    table = sensitivities(workload, args.estimator, candidates=candidates_from_args(args),
                          use_cache=not args.no_cache, **estimator_settings(args))
    write_or_print(table, args.output)
    return 0


DEMO_BUDGET = "avg_bits=3"
#: The budget of ``mpq plan MODEL`` without --budget: 4 bits a weight on average, the common target.
MODEL_BUDGET = "avg_bits=4"
DEMO_GROUP_SIZES = "none,32"


def _plan_args(p):
    add_model_args(p, optional=True)
    p.add_argument("--budget", action="append", default=[], help="avg_bits=, mb=, bytes=, bitops=, latency_ms= (repeatable)")
    add_estimator_args(p)
    p.add_argument("--sensitivity", help="use this mpq.sensitivity/v1 table instead of estimating")
    p.add_argument("--solver", default="auto")
    p.add_argument("--solver-param", action="append", default=[], metavar="KEY=VALUE", help="a solver setting, e.g. backend=highs")
    p.add_argument("--time-limit", type=float, help="solver time limit in seconds")
    p.add_argument("--max-drop", type=float, help="bisection: the largest allowed drop of --metric against full precision")
    p.add_argument("--metric", help="bisection: the workload metric to hold (default accuracy, else the first one)")
    p.add_argument("--channel-groups", type=int, default=1, help="split each layer into N output-channel groups, each with its own option")
    add_candidate_args(p)
    p.add_argument("--no-eval", action="store_true", help="skip evaluating the plan against full precision and uniform")
    p.add_argument("--problem-out", help="also write the mpq.problem/v1 that was solved")
    p.add_argument("-o", "--output", default="plan.json", help="plan file (default plan.json)")


@command("plan", "compute a mixed-precision plan for a model under a budget", _plan_args)
def cmd_plan(args) -> int:
    from .budget import parse_budgets
    from .evaluate import evaluate_plans, uniform_baselines
    from .pipeline import plan_model
    from .schema import SensitivityTable, load_document, save_document

    budgets = args.budget
    if not budgets and args.max_drop is not None:
        budgets = ["avg_bits=64"]  # only the measured drop limits the plan
    if not budgets and args.model is not None:
        budgets = [MODEL_BUDGET]
        print(f"no --budget: planning at {MODEL_BUDGET} (give --budget, e.g. avg_bits=5 or mb=12, to choose)\n")
    if not budgets:
        budgets = [DEMO_BUDGET]
        if args.group_sizes is None:
            # FINDINGS: the candidate set matters more than the allocator; group-wise options let a
            # mixed plan beat uniform precision at this low budget.
            args.group_sizes = DEMO_GROUP_SIZES
        print(f"no model given: planning the embedded digits example at the demo budget {DEMO_BUDGET}, "
              f"group sizes {args.group_sizes}\n")
    constraints = parse_budgets(budgets)
    workload = load(args)
    table = load_document(args.sensitivity, SensitivityTable) if args.sensitivity else None
    solver_settings = {"time_limit_s": args.time_limit, **parse_params(args.solver_param, "--solver-param")}
    if args.max_drop is not None:
        if args.solver != "bisection":
            raise DocumentError(f"--max-drop is the target of --solver bisection, not of {args.solver!r}")
        from .evaluate import plan_evaluator

        evaluator = plan_evaluator(workload, args.metric)
        solver_settings.update(evaluate_plan=evaluator, max_drop=args.max_drop, baseline=evaluator.baseline)
    if args.channel_groups < 1:
        raise DocumentError(f"--channel-groups must be >= 1, got {args.channel_groups}")
    result = plan_model(
        workload, constraints, estimator=args.estimator, solver=args.solver, candidates=candidates_from_args(args),
        estimator_settings=estimator_settings(args), solver_settings=solver_settings,
        table=table, use_cache=not args.no_cache, channel_groups=args.channel_groups,
    )
    print_plan(result.plan, result.table)
    if args.problem_out:
        save_document(result.problem, args.problem_out)
    write_or_print(result.plan, args.output)
    if not args.no_eval:
        baselines = uniform_baselines(result.problem, result.plan)
        plans = {"mixed plan": result.plan}
        for key, label in (("same_or_larger", "uniform, same or larger"), ("same_or_smaller", "uniform, smaller")):
            if baselines[key] is not None:
                plans[f"{label} ({baselines[key].layers[0].option})"] = baselines[key]
        print()
        rows, names = [], []
        for ev in evaluate_plans(workload, plans):
            names = names or list(ev.metrics)
            size = f"{ev.plan.totals.bytes:,}" if ev.plan else f"{sum(l.params for l in result.graph) * 2:,}"
            bits = f"{ev.plan.totals.avg_bits:.3f}" if ev.plan else "16"
            rows.append([ev.label, size, bits] + [f"{ev.metrics[k]:.4f}" for k in names])
        print(fmt_table(rows, ["model", "weight bytes", "avg bits", *names]))
    return 0


def _solve_args(p):
    p.add_argument("problem", help="problem file: JSON (mpq.problem/v1) or its columnar .npz form")
    p.add_argument("--solver", default="auto")
    p.add_argument("--budget", action="append", default=[], help="override the problem's constraints")
    p.add_argument("--time-limit", type=float)
    p.add_argument("--server", metavar="URL", help="solve on a running `mpq serve` at URL (token from $MPQ_TOKEN)")
    p.add_argument("--problem-out", help="also write the problem solved, as .json or columnar .npz")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a solver setting, e.g. backend=highs (ilp) or rule=knee (pareto)")
    p.add_argument("-o", "--output", help="plan file (default: stdout)")


@command("solve", "solve an mpq.problem/v1 and write the plan", _solve_args)
def cmd_solve(args) -> int:
    import dataclasses

    from .budget import parse_budgets
    from .columnar import ProblemColumns, load_problem, save_problem
    from .schema import Constraints
    from mpq.solvers import get_solver

    problem = load_problem(args.problem)
    if args.budget:
        constraints = Constraints(**parse_budgets(args.budget))
        if isinstance(problem, ProblemColumns):
            problem = dataclasses.replace(problem, constraints=constraints)
        else:
            problem = problem.model_copy(update={"constraints": constraints})
    if args.problem_out:
        save_problem(problem, args.problem_out)
    if args.server:
        from .client import Client

        if isinstance(problem, ProblemColumns):
            problem = problem.to_problem()
        with Client(args.server, token=os.environ.get("MPQ_TOKEN")) as client:
            plan = client.solve(problem, args.solver, time_limit_s=args.time_limit)
    else:
        plan = get_solver(args.solver, time_limit_s=args.time_limit, **parse_params(args.param, "--param")).solve(problem)
    write_or_print(plan, args.output)
    if args.output:
        print_plan(plan)
    return 0


def _apply_args(p):
    add_model_args(p)
    p.add_argument("plan", help="plan JSON file")
    p.add_argument("--eval", action="store_true", help="print the workload's metrics before and after")
    p.add_argument("--save", help="write the quantized (dequantized) weights as .safetensors with the plan beside them")


@command("apply", "apply a plan to a model; --eval reports metrics before and after", _apply_args)
def cmd_apply(args) -> int:
    from .apply import apply_plan, save_quantized
    from .evaluate import metrics
    from .schema import Plan, load_document

    plan = load_document(args.plan, Plan)
    workload = load(args)
    fp = workload.fingerprint()
    planned_for = plan.provenance.model.fingerprint if plan.provenance.model else None
    if planned_for and planned_for != fp:
        print(f"warning: the plan was computed for model {planned_for[:19]}…, this model is {fp[:19]}…", file=sys.stderr)
    before = metrics(workload) if args.eval else None
    apply_plan(workload.model, plan, batches=workload.batches)
    if args.eval:
        after = metrics(workload)
        rows = [[k, f"{before[k]:.4f}", f"{after[k]:.4f}", f"{after[k] - before[k]:+.4f}"] for k in before]
        print(fmt_table(rows, ["metric", "before", "after", "change"]))
    print(f"applied {len(plan.layers)} layers: {plan.totals.bytes:,} bytes, {plan.totals.avg_bits:.3f} avg bits")
    if args.save:
        path = save_quantized(workload.model, plan, args.save)
        print(f"wrote {path} and {path.with_suffix('.plan.json')}")
    return 0


def _schema_args(p):
    p.add_argument("kind", choices=["plan", "problem", "sensitivity"])


@command("schema", "print the JSON Schema of a document: plan, problem or sensitivity", _schema_args)
def cmd_schema(args) -> int:
    from .schema import json_schema

    print(json.dumps(json_schema(args.kind), indent=2))
    return 0


# ----------------------------------------------------------------------------------------------


#: Modules that register more commands with :func:`command` when imported.
EXTENSIONS = ("mpq.frontier_cli", "mpq.export.cli", "mpq.service.cli", "mpq.search.cli")


def _load_extensions() -> None:
    """Modules that add commands (frontier, export, serve, worker, search) register on import."""
    import importlib

    for mod in EXTENSIONS:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name is None or not mod.startswith(e.name):
                raise


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    _load_extensions()
    parser = argparse.ArgumentParser(prog="mpq", description="Mixed-precision bit allocation for PyTorch models.")
    parser.add_argument("--version", action="version", version=f"mpq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (add_args, run, help) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help)
        add_args(p)
        p.set_defaults(run=run)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except MpqError as e:
        print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # run through the importable module, so extension commands register into the same registry
    from mpq.cli import main as _main

    sys.exit(_main())
