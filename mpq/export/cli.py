"""``mpq export plan.json [--to TARGET] [-o FILE]`` and ``mpq targets [--json]``."""
from __future__ import annotations

import json
import sys

from ..cli import command, fmt_table
from ..errors import DocumentError


def _export_args(p) -> None:
    from . import available_targets

    p.add_argument("plan", help="plan file: JSON (mpq.plan/v1) or columnar .npz (mpq.plan-columns/v1)")
    p.add_argument("--to", choices=available_targets(), help="target quantizer (default: the one the plan was made for with --target)")
    p.add_argument("-o", "--output", help="main output file (default: PLAN.TARGET.EXT beside the plan; '-' prints it); "
                   "extra files go beside it with the same stem")
    p.add_argument("--merge", choices=["max"], help="hqq: give each linear tag its most precise setting across layer indices")
    p.add_argument("--keep-float", default="", metavar="NAMES",
                   help="comma-separated layers to export in float, e.g. embeddings a target cannot quantize (said in the output)")


@command("export", "export a plan to a quantizer's configuration (see `mpq targets`)", _export_args)
def cmd_export(args) -> int:
    from ..output import check_output
    from ..plan_columns import load_plan
    from . import default_output, export_plan, write_export

    check_output(args.output, "-o")
    plan = load_plan(args.plan)
    planned_for = plan.provenance.target
    target = args.to or planned_for
    if target is None:
        raise DocumentError("--to is required: the plan was not made for a target (mpq plan --target NAME records one)")
    options = {"merge": args.merge} if args.merge else {}
    keep = [n.strip() for n in args.keep_float.split(",") if n.strip()]
    result = export_plan(plan, target, keep_float_layers=keep, **options)
    if planned_for is not None and planned_for != target:
        result.notes.insert(0, f"the plan was made for {planned_for}, not {target}: its sizes are {planned_for}'s")
    if args.output == "-":
        sys.stdout.write(result.files[0].content)
        for note in result.notes:
            print(f"note: {note}", file=sys.stderr)
        return 0
    output = args.output or default_output(args.plan, result)
    check_output(output, "-o")
    paths = write_export(result, output)
    print(f"{target}: wrote {', '.join(map(str, paths))}")
    for note in result.notes:
        print(f"  note: {note}")
    return 0


def _targets_args(p) -> None:
    p.add_argument("--json", action="store_true", help="print JSON: each target's support, presets and size accounting")


@command("targets", "list the export targets: what each stores, its presets and how it counts size", _targets_args)
def cmd_targets(args) -> int:
    from .. import targets
    from . import available_targets

    described = [targets.describe(name) for name in available_targets()]
    if args.json:
        print(json.dumps({"targets": described}, indent=2))
        return 0
    rows = [[d["name"], ", ".join(f"{p}{'*' if p == d['default_preset'] else ''}" for p in d["presets"]), d["sizes"]] for d in described]
    print(fmt_table(rows, ["target", "presets (* default)", "size accounting"]))
    for d in described:
        print(f"\n{d['name']}: {d['summary']}\n  supports {d['supports']}\n  sizes: {d['sizes_doc']}")
    return 0
