"""``mpq frontier``: the exact size/distortion frontier of a problem as JSON, and optionally a PNG plot."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from .cli import command
from .errors import DocumentError
from .schema import AXES
from mpq.solvers.frontier import FrontierPoint, frontier

FRONTIER_SCHEMA = "mpq.frontier/v1"


class UniformPointDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    option: str
    bytes: int
    avg_bits: float
    distortion: float


class FrontierDoc(BaseModel):
    """``mpq.frontier/v1``: frontier points (ascending size, strictly descending distortion) and uniform baselines."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)

    schema_: str = Field(FRONTIER_SCHEMA, alias="schema")
    axis: str
    constraints: dict[str, float]
    points: list[FrontierPoint]
    uniform: list[UniformPointDoc]


def frontier_document(problem, axis: str = "bytes", *, within_budget: bool = False, max_points: Optional[int] = None) -> FrontierDoc:
    front = frontier(problem, axis, within_budget=within_budget, max_points=max_points)
    return FrontierDoc(
        axis=axis, constraints=problem.constraints.active(),
        points=front.points,
        uniform=uniform_points(problem),
    )


def uniform_points(problem) -> list[UniformPointDoc]:
    """Every option all layers share, as a uniform-precision baseline, smallest first."""
    from .evaluate import uniform_options, uniform_plan

    out = []
    for oid in uniform_options(problem):
        plan = uniform_plan(problem, oid)
        out.append(UniformPointDoc(option=oid, bytes=plan.totals.bytes, avg_bits=plan.totals.avg_bits, distortion=plan.totals.distortion))
    return sorted(out, key=lambda u: u.bytes)


#: the service answers at most this many frontier points per request
SERVER_MAX_POINTS = 100


def remote_frontier_document(problem, url: str, max_points: Optional[int]) -> FrontierDoc:
    """The frontier computed by a running ``mpq serve`` (within the problem's one budget); each point's plan is fetched."""
    import os

    from .client import Client

    limit = min(max_points or SERVER_MAX_POINTS, SERVER_MAX_POINTS)
    with Client(url, token=os.environ.get("MPQ_TOKEN")) as client:
        plans = [client.get_plan(p.plan_id) for p in client.frontier(problem, max_points=limit)]
    axis = next((a for a, c in AXES.items() if c in problem.constraints.active()), "bytes")
    return FrontierDoc(
        axis=axis, constraints=problem.constraints.active(),
        points=[FrontierPoint(bytes=pl.totals.bytes, avg_bits=pl.totals.avg_bits, distortion=pl.totals.distortion,
                                 within_budget=True, choice={l.name: l.option for l in pl.layers}) for pl in plans],
        uniform=uniform_points(problem),
    )


def plot_frontier(doc: FrontierDoc, path: str | Path, title: str = "") -> Path:
    """Frontier as a step line, uniform-precision plans as labelled crosses, the budget as a dashed line."""
    from .extras import require

    require("matplotlib", "plotting").use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    xs = [p.avg_bits for p in doc.points]
    ys = [p.distortion for p in doc.points]
    ax.step(xs, ys, where="post", color="tab:blue", lw=1.5, label=f"exact frontier ({len(doc.points)} points)")
    ax.plot(xs, ys, ".", color="tab:blue", ms=3)
    for u in doc.uniform:
        ax.plot(u.avg_bits, u.distortion, "x", color="tab:red", ms=8, mew=2)
        ax.annotate(u.option, (u.avg_bits, u.distortion), textcoords="offset points", xytext=(4, 4), fontsize=8, color="tab:red")
    ax.plot([], [], "x", color="tab:red", mew=2, label="uniform precision")
    if "max_avg_bits" in doc.constraints:
        ax.axvline(doc.constraints["max_avg_bits"], color="gray", ls="--", lw=1, label=f"budget {doc.constraints['max_avg_bits']:g} avg bits")
    elif "max_bytes" in doc.constraints and doc.points:
        b = doc.constraints["max_bytes"]
        # bytes -> avg bits on this problem's scale (bits/bytes ratio of the largest point)
        ref = doc.points[-1]
        ax.axvline(b * ref.avg_bits / max(ref.bytes, 1), color="gray", ls="--", lw=1, label=f"budget {b:,.0f} bytes")
    every = ys + [u.distortion for u in doc.uniform]
    positive = [y for y in every if y > 0]
    if positive and max(positive) / min(positive) > 100:
        if min(every) > 0:
            ax.set_yscale("log")
        elif min(every) == 0:  # e.g. the fp16 point: log above the smallest non-zero value, linear to 0
            ax.set_yscale("symlog", linthresh=min(positive))
            ax.set_ylim(bottom=0)
    ax.set_xlabel("average bits per weight (incl. scales)")
    ax.set_ylabel("predicted distortion (loss increase)")
    ax.set_title(title or "size / distortion frontier")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    from .output import write_output

    try:
        return write_output(path, lambda f: fig.savefig(f, format="png"), what="--plot")
    finally:
        plt.close(fig)


def _frontier_args(p):
    p.add_argument("problem", help="problem JSON file (mpq.problem/v1) or its columnar .npz form")
    p.add_argument("-o", "--output", help="frontier JSON file (default: stdout)")
    p.add_argument("--plot", help="also write a PNG plot here")
    p.add_argument("--axis", choices=list(AXES), default="bytes", help="size axis of the DP (default bytes)")
    p.add_argument("--within-budget", action="store_true", help="only the part of the frontier within the problem's budget")
    p.add_argument("--max-points", type=int, default=500, help="thin the list to this many points (default 500; 0 keeps all)")
    p.add_argument("--server", metavar="URL", help="compute it on a running `mpq serve` (within the budget, at most "
                   f"{SERVER_MAX_POINTS} points; token from $MPQ_TOKEN)")


@command("frontier", "the exact size/distortion frontier of a problem (JSON, optional PNG)", _frontier_args)
def cmd_frontier(args) -> int:
    from .columnar import ProblemColumns, load_problem
    from .output import check_output

    check_output(args.output, "-o")
    check_output(args.plot, "--plot")
    problem = load_problem(args.problem)
    if isinstance(problem, ProblemColumns):
        problem = problem.to_problem()
    if args.max_points < 0:
        raise DocumentError(f"--max-points must be >= 0, got {args.max_points}")
    if args.server:
        doc = remote_frontier_document(problem, args.server, args.max_points or None)
    else:
        doc = frontier_document(problem, args.axis, within_budget=args.within_budget, max_points=args.max_points or None)
    text = doc.model_dump_json(by_alias=True, indent=2) + "\n"
    if args.output and args.output != "-":
        from .output import write_output

        out = write_output(args.output, text, what="-o")
        print(f"wrote {out}: {len(doc.points)} frontier points, {len(doc.uniform)} uniform baselines")
    else:
        print(text, end="")
    if args.plot:
        plot_frontier(doc, args.plot, title=f"{Path(args.problem).name}: size / distortion frontier")
        if args.output and args.output != "-":
            print(f"wrote {args.plot}")
    return 0
