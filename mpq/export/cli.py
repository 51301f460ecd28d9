"""``mpq export plan.json --to TARGET [-o FILE]``: write a quantizer's configuration for a plan."""
from __future__ import annotations

import sys

from ..cli import command


def _export_args(p) -> None:
    from . import available_targets

    p.add_argument("plan", help="plan file: JSON (mpq.plan/v1) or columnar .npz (mpq.plan-columns/v1)")
    p.add_argument("--to", required=True, choices=available_targets(), help="target quantizer")
    p.add_argument("-o", "--output", help="main output file (default: PLAN.TARGET.EXT beside the plan; '-' prints it); "
                   "extra files go beside it with the same stem")
    p.add_argument("--merge", choices=["max"], help="hqq: give each linear tag its most precise setting across layer indices")
    p.add_argument("--keep-float", default="", metavar="NAMES",
                   help="comma-separated layers to export in float, e.g. embeddings a target cannot quantize (said in the output)")


@command("export", "export a plan to a quantizer's configuration (gptqmodel, llmcompressor, autoround, hqq, llamacpp, torchao, hawq)", _export_args)
def cmd_export(args) -> int:
    from ..output import check_output
    from ..plan_columns import load_plan
    from . import default_output, export_plan, write_export

    check_output(args.output, "-o")
    plan = load_plan(args.plan)
    options = {"merge": args.merge} if args.merge else {}
    keep = [n.strip() for n in args.keep_float.split(",") if n.strip()]
    result = export_plan(plan, args.to, keep_float_layers=keep, **options)
    if args.output == "-":
        sys.stdout.write(result.files[0].content)
        for note in result.notes:
            print(f"note: {note}", file=sys.stderr)
        return 0
    output = args.output or default_output(args.plan, result)
    check_output(output, "-o")
    paths = write_export(result, output)
    print(f"{args.to}: wrote {', '.join(map(str, paths))}")
    for note in result.notes:
        print(f"  note: {note}")
    return 0
