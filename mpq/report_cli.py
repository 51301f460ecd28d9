"""``mpq report``: the command over :mod:`mpq.report` (registered on import, listed in ``mpq.cli.EXTENSIONS``)."""
from __future__ import annotations

import sys
from pathlib import Path

from .cli import command, load
from .errors import DocumentError


def _report_args(p):
    p.add_argument("plan", help="plan JSON file (mpq.plan/v1)")
    p.add_argument("--model", help="module.path:function or Hugging Face directory: measure per-layer errors and metrics")
    p.add_argument("--calib", help="calibration text for Hugging Face models")
    p.add_argument("--problem", help="the problem the plan solved (mpq plan --problem-out): uniform baselines and the frontier plot")
    p.add_argument("-o", "--output", help="report.md or report.html (the plot is written beside it as .png); default: a table on stdout")


@command("report", "look at a plan: per-layer table, measured errors, uniform baselines, frontier plot", _report_args)
def cmd_report(args) -> int:
    from .report import build_report, plot_report, render_html, render_markdown, render_text
    from .schema import Plan, Problem, load_document

    if args.output and Path(args.output).suffix.lower() not in (".md", ".html", ".htm"):
        raise DocumentError(f"-o {args.output}: a report is .md or .html")
    plan = load_document(args.plan, Plan)
    problem = load_document(args.problem, Problem) if args.problem else None
    workload = load(args) if args.model else None
    report = build_report(plan, workload, problem)
    if not args.output:
        print(render_text(report))
        return 0
    out = Path(args.output)
    if report.frontier is not None:
        from .extras import MissingExtra

        try:
            report.plot = plot_report(report, out.with_suffix(".png"))
        except MissingExtra as e:
            print(f"note: no frontier plot: {e}", file=sys.stderr)
    out.write_text(render_html(report) if out.suffix.lower() in (".html", ".htm") else render_markdown(report))
    print(f"wrote {out}" + (f" and {report.plot}" if report.plot else ""))
    return 0
