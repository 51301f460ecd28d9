"""``mpq frontier``: the exact size/distortion frontier of a problem as JSON, and optionally a PNG plot."""
from __future__ import annotations

from pathlib import Path

from .cli import command
from .errors import DocumentError
from .frontier import SERVER_MAX_POINTS, frontier_document, plot_frontier, remote_frontier_document
from .schema import AXES


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
    from .columnar import ProblemColumns
    from .problem_files import load_problem
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
