"""The ``mpq`` command line: each command is one call into the Python API.

Every failure prints one ``error:`` line (or a few) and exits with a documented code, mapped once in
:func:`main` from the error's class (``mpq.errors``): 0 ok, 2 usage or bad input, 3 infeasible
budget, 4 time limit without a plan, 5 model or data load failure.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional

from . import registry
from .errors import EXIT_OK, EXIT_USAGE, DocumentError, MpqError
from .schema import NUMBER_FORMATS
from .tables import fmt_table, print_plan  # noqa: F401  (commands in other modules import them from here)

#: the exit status of an unexpected exception (a bug): outside the documented codes on purpose
EXIT_INTERNAL = 1


@dataclass(frozen=True)
class Command:
    """``mpq NAME``: ``add_args`` declares its arguments, ``run`` does the work (one call into the API)."""

    name: str
    add_args: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    help: str


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, add_args: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    """Register ``mpq NAME`` (once): ``add_args`` declares its arguments, the decorated function does the work."""

    def deco(run):
        registry.register(COMMANDS, name, Command(name, add_args, run, help), kind="command")
        return run

    return deco


@dataclass(frozen=True)
class SolverOptions:
    """Options one solver contributes to ``mpq solve``: the extension point the solve command declares.

    ``add_args(group)`` declares them; ``settings(args, problem)`` turns what was given into that
    solver's settings (checked by its ``Settings`` like ``--param`` ones, sent to ``--server`` too);
    ``given(args)`` names the options given, which are refused with another ``--solver``;
    ``solve(solver, problem, args)``, when set, runs the solver locally and reports more than the plan.
    """

    solver: str
    title: str
    add_args: Callable[[argparse._ArgumentGroup], None]
    settings: Callable[[argparse.Namespace, Any], dict]
    given: Callable[[argparse.Namespace], list[str]]
    solve: Optional[Callable[[Any, Any, argparse.Namespace], Any]] = None


SOLVER_OPTIONS: dict[str, SolverOptions] = {}
#: Register the ``mpq solve`` options of one solver (once per solver).
register_solver_options = registry.registrar(SOLVER_OPTIONS, "solve options", key=lambda o: o.solver)


# ----------------------------------------------------------------------------------------------
# shared argument groups


def seconds(text: str) -> float:
    """``--time-limit``: a positive, finite number of seconds (argparse refuses anything else with exit code 2)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive, finite number of seconds, got {text!r}")
    return value


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
    model = getattr(args, "model", None)
    default_groups = MODEL_GROUP_SIZES if model is not None and ":" not in model else "none"
    for g in (args.group_sizes or default_groups).split(","):
        g = g.strip().lower()
        if g in ("none", "channel", "per-channel", ""):
            groups.append(None)
        else:
            groups.extend(_int_list(g, "group-sizes"))
    formats = [f.strip() for f in (args.formats or "int").split(",") if f.strip()]
    known = {"fp", *NUMBER_FORMATS} - {"float"}  # float is chosen by --bits 16
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
    sym = {"sym": [True], "asym": [False], "both": [True, False]}[args.symmetric or "sym"]
    return CandidateSet(bits=bits, group_sizes=groups, formats=formats, symmetric=sym, prune=prune, a_bits=a_bits)


#: Candidate flags and the CandidateSet field each one sets.
CANDIDATE_FLAGS = {"bits": "bits", "group_sizes": "group_sizes", "formats": "formats", "symmetric": "symmetric",
                   "prune": "prune", "a_bits": "a_bits"}


def plan_candidates(args: argparse.Namespace):
    """The candidate grid of ``mpq plan``: with ``--target``, its preset with the flags given on top."""
    if not getattr(args, "target", None):
        return candidates_from_args(args)
    from . import targets

    parsed = candidates_from_args(args)
    given = {field: getattr(parsed, field) for flag, field in CANDIDATE_FLAGS.items() if getattr(args, flag) is not None}
    return targets.candidates(args.target, args.preset, **given)


def add_candidate_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("candidate options")
    g.add_argument("--bits", help="weight bit-widths to consider, e.g. 2,3,4,6,8 (16 = keep in float); default 2,3,4,5,6,8,16")
    g.add_argument("--group-sizes", help="'none' (per output channel) and/or group sizes, e.g. none,128; "
                   f"default {MODEL_GROUP_SIZES} for a Hugging Face model, none otherwise")
    g.add_argument("--formats", help="int, fp (fp8 e4m3 / fp4 e2m1) or explicit fp8_e4m3, fp8_e5m2, fp4_e2m1, nvfp4; default int")
    g.add_argument("--symmetric", choices=["sym", "asym", "both"], help="integer grid; default sym")
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


def add_estimator_args(p: argparse.ArgumentParser, default: Optional[str] = None) -> None:
    from .pipeline import DEFAULT_ESTIMATOR

    default = default or DEFAULT_ESTIMATOR
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


def check_registered(estimator: Optional[str] = None, solver: Optional[str] = None) -> None:
    """Refuse an unknown estimator or solver name before the model is loaded or anything is computed."""
    from .errors import UnknownName

    if estimator is not None:
        from mpq.sensitivity.base import available_estimators

        if estimator not in available_estimators():
            raise UnknownName("estimator", estimator, available_estimators())
    if solver is not None:
        from mpq.solvers.base import available_solvers

        if solver not in available_solvers():
            raise UnknownName("solver", solver, available_solvers())


def load(args: argparse.Namespace):
    from .model_ref import load_workload

    hf = {"max_samples": getattr(args, "samples", None), "max_length": getattr(args, "seq_len", None),
          "batch_size": getattr(args, "batch_size", None), "dtype": getattr(args, "dtype", None),
          "device": getattr(args, "device", None), "calib_field": getattr(args, "calib_field", None),
          "trust_remote_code": getattr(args, "trust_remote_code", False) or None}
    return load_workload(args.model, calib=getattr(args, "calib", None), hf={k: v for k, v in hf.items() if v is not None})


def write_or_print(doc, path: Optional[str], what: str = "-o") -> None:
    from .schema import dump_document, save_document

    if path and path != "-":
        save_document(doc, path, what)
        print(f"wrote {path}")
    else:  # a document model, or a plan's columns, which write their JSON text themselves
        text = doc.json_text() if hasattr(doc, "json_text") else dump_document(doc)
        (DOCUMENT_STREAM["stream"] or sys.stdout).write(text)


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


def _json_arg(p):
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def print_listing(entries: list[dict], as_json: bool, key: str) -> None:
    """A registry listing: ``{key: entries}`` as JSON, or one line per entry (name and description)."""
    if as_json:
        print(json.dumps({key: entries}, indent=2, default=str))
        return
    width = max(len(e["name"]) for e in entries) + 2
    for e in entries:
        print(f"{e['name']:{width}s}{e['description']}")


@command("estimators", "list the sensitivity estimators", _json_arg)
def cmd_estimators(args) -> int:
    from mpq.sensitivity.base import estimator_listing

    print_listing(estimator_listing(), args.json, "estimators")
    return 0


@command("solvers", "list the solvers", _json_arg)
def cmd_solvers(args) -> int:
    from mpq.solvers.base import solver_listing

    print_listing(solver_listing(), args.json, "solvers")
    return 0


def _sens_args(p):
    add_model_args(p, optional=True)
    add_estimator_args(p)
    add_candidate_args(p)
    p.add_argument("-o", "--output", help="output file (default: stdout)")


@command("sensitivity", "estimate per-layer sensitivities and write an mpq.sensitivity/v1 table", _sens_args)
def cmd_sensitivity(args) -> int:
    from .output import check_output
    from .pipeline import sensitivities

    check_output(args.output, "-o")
    check_registered(estimator=args.estimator)
    workload = load(args)
    table = sensitivities(workload, args.estimator, candidates=candidates_from_args(args),
                          use_cache=not args.no_cache, **estimator_settings(args))
    write_or_print(table, args.output)
    return 0


DEMO_BUDGET = "avg_bits=3"
#: The budget of ``mpq plan HF_MODEL`` without --budget: 4 bits a weight on average, the common target
#: for LLM weights (a ``module:function`` workload still needs --budget).
MODEL_BUDGET = "avg_bits=4"
DEMO_GROUP_SIZES = "none,32"
#: The group sizes of a Hugging Face model's plan without --group-sizes (or --target): per channel and
#: groups of 128. benchmarks/plan_quality.py measured this grid beat the per-channel one on both metrics,
#: on all-MiniLM-L6-v2 at 4, 4.5 and 5 bits and on all-mpnet-base-v2 at 4 and 5 bits (README, plan quality).
MODEL_GROUP_SIZES = "none,128"


def _default_refine() -> int:
    from .pipeline import DEFAULT_REFINE_EVALS

    return DEFAULT_REFINE_EVALS


def _plan_args(p):
    add_model_args(p, optional=True)
    p.add_argument("--budget", action="append", default=[], help="avg_bits=, mb=, bytes=, bitops=, latency_ms= (repeatable)")
    add_estimator_args(p)
    p.add_argument("--sensitivity", help="use this mpq.sensitivity/v1 table instead of estimating")
    p.add_argument("--solver", default="auto")
    p.add_argument("--solver-param", action="append", default=[], metavar="KEY=VALUE", help="a solver setting, e.g. backend=highs")
    p.add_argument("--time-limit", type=seconds, help="solver time limit in seconds")
    p.add_argument("--max-drop", type=float, help="bisection: the largest allowed drop of --metric against full precision")
    p.add_argument("--metric", help="bisection: the workload metric to hold (default accuracy, else the first one)")
    p.add_argument("--channel-groups", type=int, default=1, help="split each layer into N output-channel groups, each with its own option")
    p.add_argument("--refine", type=int, default=None, metavar="N",
                   help="whole-model evaluations for the measured refinement of the plan (default %d; 0 = the additive optimum as it is)"
                   % _default_refine())
    add_candidate_args(p)
    g = p.add_argument_group("target quantizer")
    g.add_argument("--target", help="plan for this quantizer: its formats, fused layers and size accounting (see `mpq targets`)")
    g.add_argument("--preset", help="the target's candidate grid by name, e.g. --target vllm --preset w4a16; "
                   "--bits/--group-sizes/--formats/--symmetric/--a-bits given too replace those fields")
    p.add_argument("--no-eval", action="store_true", help="skip evaluating the plan against full precision and uniform")
    p.add_argument("--problem-out", help="also write the problem that was solved, as .json (mpq.problem/v1) or columnar .npz")
    p.add_argument("--kv-bits", help="causal LMs: also plan each attention layer's KV-cache bits among these (4,8,16); needs --context-tokens")
    p.add_argument("--context-tokens", type=int, help="tokens of context the KV cache holds; its memory counts in --budget mb=")
    p.add_argument("--latency-table", help="per-option layer latencies: mpq.latency/v1 JSON from `mpq profile`, or CSV shape,option,ms")
    p.add_argument("-o", "--output", default="plan.json", help="plan file (default plan.json)")


@command("plan", "compute a mixed-precision plan for a model under a budget", _plan_args)
def cmd_plan(args) -> int:
    from .budget import parse_budgets
    from .evaluate import evaluate_plans, uniform_baselines
    from .output import check_output
    from .pipeline import plan_model
    from .schema import SensitivityTable, load_document

    check_output(args.output, "-o")
    check_output(args.problem_out, "--problem-out")
    check_registered(estimator=None if args.sensitivity else args.estimator, solver=args.solver)
    budgets = args.budget
    if not budgets and args.max_drop is not None:
        budgets = ["avg_bits=64"]  # only the measured drop limits the plan
    if not budgets and args.model is not None and ":" not in args.model:  # a Hugging Face model
        budgets = [MODEL_BUDGET]
        print(f"no --budget: planning at {MODEL_BUDGET} (give --budget, e.g. avg_bits=5 or mb=12, to choose)\n")
    if not budgets:
        if args.model is not None:
            raise DocumentError("--budget is required, e.g. --budget avg_bits=4 or --budget mb=12")
        budgets = [DEMO_BUDGET]
        if args.group_sizes is None:
            # measured on this example: the candidate set matters more than the allocator; group-wise
            # options let a mixed plan beat uniform precision at this low budget.
            args.group_sizes = DEMO_GROUP_SIZES
        print(f"no model given: planning the embedded digits example at the demo budget {DEMO_BUDGET}, "
              f"group sizes {args.group_sizes}\n")
    constraints = parse_budgets(budgets)
    if args.preset and not args.target:
        raise DocumentError("--preset names a target's candidate grid: give --target too (see `mpq targets`)")
    candidates = plan_candidates(args)  # an unknown target or preset fails before the model loads
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
    latency_table = None
    if args.latency_table:
        from .latency import load_latency_table

        latency_table = load_latency_table(args.latency_table)
    result = plan_model(
        workload, constraints, estimator=args.estimator, solver=args.solver, candidates=candidates,
        estimator_settings=estimator_settings(args), solver_settings=solver_settings,
        table=table, use_cache=not args.no_cache, channel_groups=args.channel_groups, latency_table=latency_table,
        target=args.target,
        kv_bits=_int_list(args.kv_bits, "kv-bits") if args.kv_bits else (), context_tokens=args.context_tokens,
        refine=_default_refine() if args.refine is None else args.refine, seed=args.seed,
    )
    if result.refinement is not None:
        r = result.refinement
        print(f"measured refinement: {r.objective_name} on the calibration data {r.seed_objective:.6g} -> {r.objective:.6g} "
              f"({r.evaluations} evaluations, {r.accepted} accepted, {r.seconds:.1f} s)")
    print_plan(result.plan, result.table)
    if args.target:
        print(f"planned for {args.target}: sizes in its own accounting; export with `mpq export {args.output}`")
    if result.predicted_latency_ms is not None:
        rest = "" if result.latency_overhead_ms is None else f" + {result.latency_overhead_ms:.4g} ms rest of the model (profiled)"
        print(f"predicted latency {result.predicted_latency_ms:.4g} ms ± {result.latency_spread_ms:.2g} end to end: "
              f"{result.plan.totals.latency_ms:.4g} ms in the planned layers{rest}")
    if args.problem_out:
        from .problem_files import save_problem

        save_problem(result.problem, args.problem_out)
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
    p.add_argument("--time-limit", type=seconds, help="solver time limit in seconds")
    p.add_argument("--server", metavar="URL", help="solve on a running `mpq serve` at URL (token from $MPQ_TOKEN)")
    p.add_argument("--problem-out", help="also write the problem solved, as .json or columnar .npz")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a solver setting, e.g. backend=highs (ilp) or rule=knee (pareto)")
    p.add_argument("-o", "--output", help="plan file: .json (mpq.plan/v1) or columnar .npz (mpq.plan-columns/v1); default: stdout")
    for ext in SOLVER_OPTIONS.values():
        ext.add_args(p.add_argument_group(f"{ext.title} (--solver {ext.solver})"))


def solver_options_settings(args: argparse.Namespace, problem) -> dict:
    """Settings from the options registered solvers contribute; another solver's options are refused."""
    settings: dict = {}
    for ext in SOLVER_OPTIONS.values():
        if ext.solver == args.solver:
            settings.update(ext.settings(args, problem))
        elif ext.given(args):
            flags = ext.given(args)
            raise DocumentError(f"{', '.join(flags)} {'goes' if len(flags) == 1 else 'go'} with --solver {ext.solver}, "
                                f"not --solver {args.solver}")
    return settings


@command("solve", "solve an mpq.problem/v1 and write the plan", _solve_args)
def cmd_solve(args) -> int:
    import dataclasses

    from .budget import parse_budgets
    from .columnar import ProblemColumns
    from .problem_files import load_problem, save_problem
    from .output import check_output
    from .plan_columns import save_plan
    from .progress import step
    from .schema import Constraints
    from mpq.solvers import get_solver

    check_output(args.output, "-o")
    check_output(args.problem_out, "--problem-out")
    check_registered(solver=None if args.server else args.solver)
    # columns straight from JSON when the plan comes from a local solver's arrays (the JSON models judge the rest)
    as_columns = not args.server and args.solver not in SOLVER_OPTIONS
    with step(f"loading {args.problem}"):
        problem = load_problem(args.problem, columns=as_columns)
    if args.budget:
        constraints = Constraints(**parse_budgets(args.budget))
        if isinstance(problem, ProblemColumns):
            problem = dataclasses.replace(problem, constraints=constraints)
        else:
            problem = problem.model_copy(update={"constraints": constraints})
    if args.problem_out:
        with step(f"writing {args.problem_out}"):
            save_problem(problem, args.problem_out)
    columns_out = isinstance(problem, ProblemColumns) or (bool(args.output) and args.output.endswith(".npz"))
    settings = {**solver_options_settings(args, problem), **parse_params(args.param, "--param")}
    with step(f"solving ({args.solver})"):
        if args.server:
            from .client import Client

            if isinstance(problem, ProblemColumns):
                problem = problem.to_problem()
            with Client(args.server, token=os.environ.get("MPQ_TOKEN")) as client:
                plan = client.solve(problem, args.solver, time_limit_s=args.time_limit, **settings)
        else:
            solver = get_solver(args.solver, time_limit_s=args.time_limit, **settings)
            ext = SOLVER_OPTIONS.get(args.solver)
            if ext is not None and ext.solve is not None:
                plan = ext.solve(solver, problem, args)
            else:
                plan = solver.solve_columns(problem) if columns_out else solver.solve(problem)
    if args.output and args.output != "-":
        with step(f"writing {args.output}"):
            save_plan(plan, args.output)
        print(f"wrote {args.output}")
        print_plan(plan)
    else:
        write_or_print(plan, args.output)
    return 0


def _apply_args(p):
    add_model_args(p)
    p.add_argument("plan", help="plan file: JSON (mpq.plan/v1) or columnar .npz (mpq.plan-columns/v1)")
    p.add_argument("--eval", action="store_true", help="print the workload's metrics before and after")
    p.add_argument("--save", help="write the quantized (dequantized) weights as .safetensors with the plan beside them")


@command("apply", "apply a plan to a model; --eval reports metrics before and after", _apply_args)
def cmd_apply(args) -> int:
    from .apply import apply_plan, save_quantized
    from .evaluate import metrics
    from .output import check_output
    from .plan_columns import load_plan

    check_output(args.save, "--save")
    plan = load_plan(args.plan)
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


def _profile_args(p):
    add_model_args(p, optional=True)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before timing (default 3)")
    p.add_argument("--repeats", type=int, default=15, help="timed calls; the median is reported (default 15)")
    p.add_argument("--threads", type=int, help="CPU threads while timing (default: torch's setting); plan for the threads you serve with")
    add_candidate_args(p)
    p.add_argument("-o", "--output", help="latency table file (default: stdout)")


@command("profile", "time each layer at each candidate option on this device; writes an mpq.latency/v1 table", _profile_args)
def cmd_profile(args) -> int:
    from .graph import discover
    from .latency import profile

    workload = load(args)
    table = profile(workload, discover(workload), candidates_from_args(args).specs(), device=args.device,
                    warmup=args.warmup, repeats=args.repeats, threads=args.threads)
    write_or_print(table, args.output)
    if args.output and args.output != "-":
        timing = table.models[workload.name]
        kernels = sorted({e.kernel for e in table.entries})
        print(f"{len(table.entries)} entries on {table.device} ({table.device_name}, {table.threads} threads); kernels: {', '.join(kernels)}")
        print(f"whole model {timing.float_ms:.4g} ms ± {timing.spread_ms:.2g} in float; rest of the model beyond its layers {timing.overhead_ms:.4g} ms")
    return 0


def _schema_args(p):
    from .schema import DOCUMENTS

    p.add_argument("kind", choices=[*sorted(DOCUMENTS), "plan-columns", "problem-columns"])


@command("schema", "print the JSON Schema of a document (plan, problem, sensitivity, latency) or the layout of a columnar file", _schema_args)
def cmd_schema(args) -> int:
    from .schema import json_schema

    if args.kind.endswith("-columns"):
        from . import columnar, plan_columns

        print(json.dumps((plan_columns if args.kind == "plan-columns" else columnar).describe(), indent=2))
        return 0
    print(json.dumps(json_schema(args.kind), indent=2))
    return 0


# ----------------------------------------------------------------------------------------------


#: Modules that register more commands (and ``mpq solve`` options) with :func:`command` when imported.
EXTENSIONS = ("mpq.frontier_cli", "mpq.report_cli", "mpq.export.cli", "mpq.service.cli", "mpq.search.cli")


def _load_extensions() -> None:
    """Built-in command modules (frontier, export, serve, worker, search), then ``mpq.commands`` entry points.

    Every module registers before any parser is built, so the order of the modules does not matter.
    """
    import importlib

    for mod in EXTENSIONS:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name is None or not mod.startswith(e.name):
                raise
    registry.load_entry_points("mpq.commands", COMMANDS, "command", key=lambda c: c.name)


def command_named(argv: list[str]) -> Optional[str]:
    """The command ``argv`` runs (its first word: the top-level options take no values), or None."""
    words = [a for a in argv if not a.startswith("-")]
    return words[0] if words and words[0] in COMMANDS else None


def build_parser(argv: Optional[list[str]] = None) -> argparse.ArgumentParser:
    """The parser of every command; with ``argv``, only the command it runs gets its arguments (none when it
    names no command, as ``mpq --version`` does), so ``mpq solve`` does not import what other commands'
    options name (estimators, exporters, torch)."""
    from . import __version__

    _load_extensions()
    only = None if argv is None else command_named(argv)
    parser = argparse.ArgumentParser(prog="mpq", description="Mixed-precision bit allocation for PyTorch models.")
    parser.add_argument("--version", action="version", version=f"mpq {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log lines (-vv: more still)")
    parser.add_argument("-q", action="store_true", dest="quiet_all", help="no progress bars or info lines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for c in COMMANDS.values():
        p = sub.add_parser(c.name, help=c.help, description=c.help, allow_abbrev=False)  # a prefix must never pick an option
        if argv is None or c.name == only:
            c.add_args(p)
        add_verbosity_args(p, default=argparse.SUPPRESS)  # SUPPRESS: the subcommand keeps what `mpq -v` set
        p.set_defaults(run=c.run)
    return parser


def add_verbosity_args(p: argparse.ArgumentParser, default) -> None:
    """A command's ``-v`` (repeatable: debug lines of the ``mpq`` logger) and ``-q`` (warnings only, no progress bars)."""
    p.add_argument("-v", "--verbose", action="count", default=default, help="more log lines (-vv: more still)")
    if not any("--quiet" in a.option_strings for a in p._actions):
        p.add_argument("-q", "--quiet", action="store_true", default=default, help="no progress bars or info lines")
    else:  # the command's own --quiet (no progress bar) also answers to -q
        p._option_string_actions["--quiet"].option_strings.append("-q")
        p._option_string_actions["-q"] = p._option_string_actions["--quiet"]


#: Where a command's document goes when it is written to stdout; human-readable text then goes to stderr.
DOCUMENT_STREAM = {"stream": None}


def _writes_document_to_stdout(args: argparse.Namespace) -> bool:
    """True when the command's document is going to stdout: ``-o -``, or no ``-o`` where that means stdout."""
    output = getattr(args, "output", "")
    return output == "-" or (output is None and args.command in ("sensitivity", "solve", "frontier"))


#: Commands that run no torch. mpq makes no BLAS call through numpy (its solvers sort, scan and index), so for
#: them numpy's OpenBLAS thread pool only starts and spins: 0.1 CPU s of a 1 s ``mpq solve``. Torch may use
#: OpenBLAS itself (aarch64 wheels), so commands that run models keep the default.
NO_BLAS_COMMANDS = ("solve",)


def main(argv: Optional[list[str]] = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if "numpy" not in sys.modules and next((w for w in words if not w.startswith("-")), None) in NO_BLAS_COMMANDS:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # read when numpy loads OpenBLAS; a user's setting stands
    parser = build_parser(words)
    args = parser.parse_args(argv)  # a usage error exits here with code 2 (EXIT_USAGE)
    if not getattr(args, "run", None):
        parser.print_help()
        return EXIT_USAGE
    from .console import configure

    if getattr(args, "quiet_all", False):
        args.quiet = True  # `mpq -q COMMAND` is `mpq COMMAND -q`
    configure(getattr(args, "verbose", 0) - (1 if getattr(args, "quiet", False) else 0))
    if argv is None:  # the program itself, not a caller in the same process
        _freeze_imports()
    try:
        if _writes_document_to_stdout(args):
            # stdout carries only the document; tables and notes that print() writes go to stderr
            import contextlib

            DOCUMENT_STREAM["stream"] = sys.stdout
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    code = int(args.run(args) or 0)
            finally:
                DOCUMENT_STREAM["stream"] = None
        else:
            code = int(args.run(args) or 0)
        sys.stdout.flush()
        return code
    except MpqError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # e.g. `mpq layers --json | head`: the reader left, nothing more to say
        _silence_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not bad input: one line, the traceback only on request
        if os.environ.get("MPQ_DEBUG"):
            raise
        print(f"error: internal error {type(e).__name__}: {e} (a bug in mpq; rerun with MPQ_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


def _freeze_imports() -> None:
    """Leave what the imports built out of every later garbage collection, the interpreter's last ones included.

    Modules, classes and functions live until the process exits, yet each full collection walks them
    all, and so does the interpreter at exit: 0.04 CPU s of a 0.5 s ``mpq solve``. What the command
    itself allocates is collected as before.
    """
    import gc

    gc.freeze()


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise BrokenPipeError again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    # run through the importable module, so extension commands register into the same registry
    from mpq.cli import main as _main

    sys.exit(_main())
