"""The frontier document (``mpq.frontier/v1``): the exact size/distortion frontier of a problem, its uniform
baselines, and its plot; ``mpq frontier`` and ``mpq report`` make it, the service answers its points."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from .schema import AXES
from mpq.solvers.frontier import FrontierPoint, frontier

FRONTIER_SCHEMA = "mpq.frontier/v1"


class UniformPointDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, defer_build=True)

    option: str
    bytes: int
    avg_bits: float
    distortion: float


class FrontierDoc(BaseModel):
    """``mpq.frontier/v1``: frontier points (ascending size, strictly descending distortion) and uniform baselines."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True, defer_build=True)

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
