"""Plain-text tables for people: the generic table and the plan printer (``mpq plan``, ``mpq solve``, ``mpq report``)."""
from __future__ import annotations


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


#: beyond this many layers, a plan's table shows its first and last rows and a summary
TABLE_ROWS = 300
EDGE_ROWS = 10


def print_plan(plan, table=None, file=None) -> None:
    """The per-layer table, totals and solver line of a plan (``mpq.plan/v1`` or its columns)."""
    from .plan_columns import PlanColumns

    header = ["layer", "params", "option", "bits", "group", "bytes", "sensitivity", "distortion"]
    if isinstance(plan, PlanColumns):
        a = plan.arrays
        n = plan.n_layers
        options = a["option_names"]

        def row(i: int) -> list:
            gs = int(a["group_size"][i])
            return [str(a["layer_name"][i]), f"{int(a['layer_params'][i]):,}", str(options[a["row_option"][i]]), int(a["w_bits"][i]),
                    gs or "-", f"{int(a['bytes'][i]):,}", "", f"{float(a['distortion'][i]):.4g}"]

        def counts() -> dict[str, int]:
            import numpy as np

            c = np.bincount(a["row_option"], minlength=options.size)
            return {str(options[k]): int(c[k]) for k in np.flatnonzero(c)}
    else:
        n = len(plan.layers)

        def row(i: int) -> list:
            l = plan.layers[i]
            sens = table.layers.get(l.name) if table is not None else None
            return [l.name, f"{l.params:,}", l.option, l.w_bits, "-" if l.group_size is None else l.group_size, f"{l.bytes:,}",
                    f"{sens.score:.4g}" if sens is not None else "", f"{l.distortion:.4g}"]

        def counts() -> dict[str, int]:
            from collections import Counter

            return dict(Counter(l.option for l in plan.layers))
    if n <= TABLE_ROWS:
        rows = [row(i) for i in range(n)]
    else:
        rows = [row(i) for i in range(EDGE_ROWS)] + [["...", f"({n - 2 * EDGE_ROWS:,} more layers)"] + [""] * 6]
        rows += [row(i) for i in range(n - EDGE_ROWS, n)]
    print(fmt_table(rows, header), file=file)
    if n > TABLE_ROWS:
        parts = ", ".join(f"{k} {v:,} ({100 * v / n:.1f}%)" for k, v in sorted(counts().items(), key=lambda kv: -kv[1]))
        print(f"\n{n:,} layers by option: {parts}", file=file)
    t, s = plan.totals, plan.solver
    limits = ", ".join(f"{k}={v:g}" for k, v in plan.constraints.items())
    print(f"\ntotal {t.bytes:,} bytes, {t.avg_bits:.3f} avg bits, predicted distortion {t.distortion:.4g}  (budget: {limits})", file=file)
    gap = "" if s.gap is None else f", gap {s.gap:.2g}"
    print(f"solver {s.name}: {s.status}{gap}, {s.seconds:.3f} s", file=file)
