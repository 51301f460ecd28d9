"""``mpq report``: look at a plan: per-layer table, measured errors, uniform baselines and the frontier.

- Always: each layer's option, bits, bytes and predicted distortion.
- With a model: each planned layer's measured output error with the whole plan applied (relative
  squared error of the layer's output on the calibration data), and the model's metrics for full
  precision, the plan, and the uniform plans next to it in size.
- With the problem the plan solved (``mpq plan --problem-out``): the exact frontier drawn on the
  axis of the plan's budget (bytes or average bits), the plan marked on it, uniform plans labelled,
  and, with a model, the measured metric of each plotted plan beside the predicted distortion.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from .schema import Plan, Problem
from .tables import fmt_table
from .workload import Workload, run_hooked

#: frontier axis (mpq.schema.AXES) -> how the plot's x axis reads; a BitOps frontier is drawn against bytes
AXIS_LABELS = {"bytes": "weight bytes", "bits": "average bits per weight (incl. scales)"}


@dataclass
class Report:
    plan: Plan
    rows: list[list] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    comparison: list[dict] = field(default_factory=list)  # label, bytes, avg_bits, predicted, metrics
    axis: str = "bytes"
    frontier: Optional[object] = None  # FrontierDoc
    plot: Optional[Path] = None


def layer_output_errors(workload: Workload, plan: Plan) -> dict[str, float]:
    """Relative squared error ``sum ||y_q - y||^2 / sum ||y||^2`` of each planned layer's output, whole plan applied."""
    from .apply import apply_plan

    quantized = apply_plan(workload.model, plan, inplace=False, batches=workload.batches)
    names = [l.name for l in plan.layers if l.name in dict(workload.model.named_modules())]

    def outputs(model) -> dict[str, list[torch.Tensor]]:
        seen: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        modules = dict(model.named_modules())
        handles = [modules[n].register_forward_hook(lambda m, a, out, n=n: seen[n].append(out.detach().float()))
                   for n in names if isinstance(getattr(modules[n], "weight", None), torch.Tensor)]
        run_hooked(model, workload.batches, handles)
        return seen

    ref, got = outputs(workload.model), outputs(quantized)
    errors = {}
    for n in names:
        if ref[n]:
            num = sum(float(((q - r) ** 2).sum()) for q, r in zip(got[n], ref[n]))
            den = sum(float((r**2).sum()) for r in ref[n])
            errors[n] = num / den if den > 0 else 0.0
    return errors


def frontier_axis(plan: Plan) -> str:
    """The frontier axis of the plan's budget (``mpq.schema.AXES``): bytes, bits (for avg_bits) or bitops."""
    from .schema import AXES

    for axis, constraint in AXES.items():
        if constraint in plan.constraints:
            return axis
    return "bytes"


def build_report(plan: Plan, workload: Optional[Workload] = None, problem: Optional[Problem] = None) -> Report:
    report = Report(plan=plan, axis=frontier_axis(plan))
    errors = layer_output_errors(workload, plan) if workload is not None else {}
    report.header = ["layer", "params", "option", "bits", "group", "bytes", "predicted distortion"]
    if workload is not None:
        report.header.append("measured output error")
    for l in plan.layers:
        row = [l.name, f"{l.params:,}", l.option, l.w_bits, "-" if l.group_size is None else l.group_size, f"{l.bytes:,}", f"{l.distortion:.4g}"]
        if workload is not None:
            row.append(f"{errors[l.name]:.4g}" if l.name in errors else "")
        report.rows.append(row)
    plans: dict[str, Plan] = {"this plan": plan}
    if problem is not None:
        from .evaluate import uniform_baselines
        from .frontier import frontier_document

        for key, label in (("same_or_smaller", "uniform, no larger"), ("same_or_larger", "uniform, no smaller")):
            base = uniform_baselines(problem, plan)[key]
            if base is not None:
                plans[f"{label} ({base.layers[0].option})"] = base
        report.frontier = frontier_document(problem, report.axis if report.axis in AXIS_LABELS else "bytes")
    for label, p in plans.items():
        report.comparison.append({"label": label, "bytes": p.totals.bytes, "avg_bits": p.totals.avg_bits,
                                  "predicted": p.totals.distortion, "metrics": {}})
    if workload is not None:
        from .evaluate import evaluate_plans

        evaluations = evaluate_plans(workload, plans)
        fp = evaluations[0]
        report.comparison.insert(0, {"label": "full precision", "bytes": sum(l.params for l in plan.layers) * 2,
                                     "avg_bits": 16.0, "predicted": 0.0, "metrics": fp.metrics})
        for entry, ev in zip(report.comparison[1:], evaluations[1:]):
            entry["metrics"] = ev.metrics
    return report


def plot_report(report: Report, path: str | Path) -> Path:
    """The frontier on the budget's axis, the plan as a star, uniform plans labelled, measured metrics on a second axis."""
    from .extras import require

    require("matplotlib", "mpq report's plot").use("Agg")
    import matplotlib.pyplot as plt

    doc, axis = report.frontier, report.frontier.axis
    x_of = (lambda o: o.bytes) if axis == "bytes" else (lambda o: o.avg_bits)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    xs, ys = [x_of(p) for p in doc.points], [p.distortion for p in doc.points]
    ax.step(xs, ys, where="post", color="tab:blue", lw=1.5, label=f"exact frontier ({len(doc.points)} points), predicted")
    for i, u in enumerate(doc.uniform):
        ax.plot(x_of(u), u.distortion, "x", color="tab:red", ms=8, mew=2)
        ax.annotate(u.option, (x_of(u), u.distortion), textcoords="offset points", xytext=(5, 6 if i % 2 else -12),
                    fontsize=8, color="tab:red", annotation_clip=False)
    ax.plot([], [], "x", color="tab:red", mew=2, label="uniform precision, predicted")
    px = report.plan.totals.bytes if axis == "bytes" else report.plan.totals.avg_bits
    ax.plot(px, report.plan.totals.distortion, "*", color="gold", mec="black", ms=16, zorder=5, label="this plan, predicted")
    constraints = report.plan.constraints
    if axis == "bytes" and "max_bytes" in constraints:
        ax.axvline(constraints["max_bytes"], color="gray", ls="--", lw=1, label=f"budget {constraints['max_bytes']:,.0f} bytes")
    elif axis == "bits" and "max_avg_bits" in constraints:
        ax.axvline(constraints["max_avg_bits"], color="gray", ls="--", lw=1, label=f"budget {constraints['max_avg_bits']:g} avg bits")
    positive = [y for y in ys + [u.distortion for u in doc.uniform] if y > 0]
    if positive and max(positive) / min(positive) > 100:
        ax.set_yscale("symlog", linthresh=min(positive))
    ax.set_xlabel(AXIS_LABELS[axis])
    ax.set_ylabel("predicted distortion (loss increase)")
    measured = [c for c in report.comparison if c["metrics"] and c["label"] != "full precision"]
    handles, labels = ax.get_legend_handles_labels()
    if measured:
        metric = "loss" if "loss" in measured[0]["metrics"] else next(iter(measured[0]["metrics"]))
        ax2 = ax.twinx()
        for c in measured:
            x = c["bytes"] if axis == "bytes" else c["avg_bits"]
            marker = "*" if c["label"] == "this plan" else "o"
            ax2.plot(x, c["metrics"][metric], marker, mfc="none", mec="tab:green", ms=12 if marker == "*" else 8, mew=1.5)
        ax2.set_ylabel(f"measured {metric}", color="tab:green")
        ax2.plot([], [], "o", mfc="none", mec="tab:green", label=f"measured {metric} (plan: star, uniform: circles)")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, loc="upper right")
    ax.margins(x=0.06, y=0.1)
    ax.grid(True, alpha=0.3)
    ax.set_title("plan on the size / distortion frontier")
    fig.tight_layout()
    path = Path(path)
    try:
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def _comparison_rows(report: Report) -> tuple[list[str], list[list]]:
    names: list[str] = []
    for c in report.comparison:
        names += [k for k in c["metrics"] if k not in names]
    header = ["model", "weight bytes", "avg bits", "predicted distortion", *names]
    rows = [[c["label"], f"{c['bytes']:,}", f"{c['avg_bits']:.3f}", f"{c['predicted']:.4g}",
             *(f"{c['metrics'][k]:.4f}" if k in c["metrics"] else "" for k in names)] for c in report.comparison]
    return header, rows


def render_markdown(report: Report) -> str:
    t, s = report.plan.totals, report.plan.solver
    budget = ", ".join(f"{k}={v:g}" for k, v in report.plan.constraints.items())
    out = ["# mpq plan report", "",
           f"{len(report.plan.layers)} layers, {t.bytes:,} bytes, {t.avg_bits:.3f} average bits, predicted distortion "
           f"{t.distortion:.4g} (budget: {budget}); solver {s.name}: {s.status}.", ""]

    def md(header, rows):
        lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
        return lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows]

    out += ["## Layers", "", *md(report.header, report.rows), ""]
    if report.comparison and (len(report.comparison) > 1 or report.comparison[0]["metrics"]):
        out += ["## Against full precision and uniform plans", "", *md(*_comparison_rows(report)), ""]
    if report.plot is not None:
        out += ["## Frontier", "", f"![frontier]({report.plot.name})", ""]
    return "\n".join(out)


def render_html(report: Report) -> str:
    def table(header, rows):
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    t = report.plan.totals
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>mpq plan report</title>",
             "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}td:first-child{text-align:left}"
             "table{border-collapse:collapse}tr:nth-child(even){background:#f4f4f4}</style></head><body>",
             "<h1>mpq plan report</h1>",
             f"<p>{len(report.plan.layers)} layers, {t.bytes:,} bytes, {t.avg_bits:.3f} average bits, predicted distortion {t.distortion:.4g}.</p>",
             "<h2>Layers</h2>", table(report.header, report.rows)]
    if report.comparison and (len(report.comparison) > 1 or report.comparison[0]["metrics"]):
        parts += ["<h2>Against full precision and uniform plans</h2>", table(*_comparison_rows(report))]
    if report.plot is not None:
        parts += ["<h2>Frontier</h2>", f"<img src='{html.escape(report.plot.name)}' alt='frontier'>"]
    return "\n".join(parts + ["</body></html>"])


def render_text(report: Report) -> str:
    out = [fmt_table(report.rows, report.header)]
    if report.comparison and (len(report.comparison) > 1 or report.comparison[0]["metrics"]):
        out += ["", fmt_table(*reversed(_comparison_rows(report)))]
    return "\n".join(out)
