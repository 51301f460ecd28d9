"""NVIDIA ModelOpt ``auto_quantize`` as a plan-quality peer: one format per layer, per budget.

Run by the peers' Python: ``python modelopt_plan.py REQUEST.json RESULT.json``. The request names
the model directory, the calibration texts, the candidate formats (``formats``: option id, bits,
group size (null = per output channel) and effective bits a weight), every target layer's bytes at
each format in mpq's accounting (``sizes``), the byte cap of each budget (``caps``) and the method
(``gradient`` or ``kl_div``). The result gives, per budget, each target layer's option id (``fp16``
= left in float) and the seconds to plan.

Three things make ModelOpt's plan comparable to the others:

- It gets the same formats as mpq's default (bits x per-channel / group-128), each costed at its
  ``effective_bits``: its bits plus the scale bits a weight that mpq counts (a 16-bit scale per
  channel or per 128 weights), so ModelOpt itself knows that group 128 costs more than per channel.
- Its constraint is an average of effective bits, not bytes. The largest constraint whose plan fits
  the byte cap in mpq's accounting is found by bisection (7 ``auto_quantize`` calls a budget): the
  first call calibrates and scores, every later one reads ModelOpt's own checkpoint of the scores. A
  budget's seconds are the scoring plus its own calls.
- The gradient score is ``sum((grad_output * output_diff) ** 2)``. With a loss averaged over every
  token and hidden unit, the scores of MiniLM were 1e-13..1e-8, under the LP solver's tolerance:
  it saw all-zero scores and returned a 2.2-bit plan at every budget. The loss is therefore summed
  over tokens and hidden units (a constant factor, so the ranking of formats is unchanged).

``kl_div`` evaluates every layer at every format with a whole forward pass per calibration batch;
on CPU that took over 30 minutes on MiniLM with 8 batches, so ``score_steps`` (default: every
batch) lets the benchmark give it fewer batches, and it says so in its row.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
warnings.filterwarnings("ignore")

import torch  # noqa: E402

from encoder import batches, load_encoder, sampled_target_loss, target_layers  # noqa: E402
from shared import plan_bytes, read_request, write_result  # noqa: E402


def fmt(bits: int, group_size, effective_bits: float) -> dict:
    """A weight-only format; ``effective_bits`` (bits + scale bits a weight, in mpq's accounting) is what ModelOpt costs it at."""
    w = {"num_bits": bits, "axis": 0} if group_size is None else {"num_bits": bits, "block_sizes": {-1: group_size, "type": "static"}}
    w["effective_bits"] = effective_bits
    return {"quant_cfg": [{"quantizer_name": "*", "enable": False}, {"quantizer_name": "*weight_quantizer", "cfg": w},
                          {"quantizer_name": "*input_quantizer", "enable": False}], "algorithm": "max"}


def recipe_option(recipe, ids: list[str]) -> str:
    """The option id of a chosen recipe: ModelOpt names the i-th custom format ``CUSTOM_i``; "no quantization" is ``fp16``."""
    name = str(recipe).split("(")[0]
    if name == "NONE":
        return "fp16"
    if not name.startswith("CUSTOM_"):
        raise SystemExit(f"ModelOpt chose a format the request did not give: {recipe}")
    return ids[int(name.split("_")[1])]


def main() -> None:
    req = read_request()
    torch.manual_seed(0)
    torch.set_num_threads(int(req.get("threads", torch.get_num_threads())))
    import modelopt.torch.quantization as mtq

    formats = [fmt(f["bits"], f["group_size"], f["effective_bits"]) for f in req["formats"]]
    ids = [f["id"] for f in req["formats"]]
    sizes = req["sizes"]
    results = {}
    score_seconds = None
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "autoquant.pth")

        def search(bits: float):
            """One auto_quantize call at ``effective_bits = bits`` (scores from the checkpoint after the first)."""
            model, tok = load_encoder(req["model_dir"])
            layers = target_layers(model)
            data = batches(tok, req["calib"], req["batch_size"], req["seq_len"])
            with torch.no_grad():
                teachers = [model(**b).last_hidden_state.detach() for b in data]
            index = {id(b): i for i, b in enumerate(data)}

            def forward_step(m, b):
                return m(**b).last_hidden_state

            def loss_func(out, b):
                i = index[id(b)]
                # summed, not averaged: see the module docstring (scores under the LP's tolerance)
                return sampled_target_loss(out, b, teachers[i], seed=i) * b["attention_mask"].sum() * out.shape[-1]

            disabled = [n + "*" for n, mod in model.named_modules() if isinstance(mod, torch.nn.Linear) and n not in layers]
            kw = dict(loss_func=loss_func) if req["method"] == "gradient" else {}
            steps = min(len(data), int(req.get("score_steps") or len(data)))
            model, state = mtq.auto_quantize(
                model, constraints={"effective_bits": bits}, quantization_formats=formats,
                data_loader=data, forward_step=forward_step, disabled_layers=disabled or None,
                num_calib_steps=len(data), num_score_steps=steps, method=req["method"], checkpoint=ckpt, **kw,
            )
            choice = {name.split(".quant_recipe")[0]: recipe_option(r, ids) for name, r in state["best"]["recipe"].items()}
            choice = {n: choice.get(n, "fp16") for n in layers}  # a layer ModelOpt left alone stays in float
            return choice, plan_bytes(choice, sizes), steps

        for budget in req["budgets"]:
            cap = float(req["caps"][str(budget)])
            t0 = time.perf_counter()
            # ModelOpt's constraint is average effective bits; the largest that fits the byte cap in mpq's
            # accounting is found by bisection over it (its scores are computed once, then read back)
            lo, hi = float(req["min_effective_bits"]), float(budget) + 1.0
            best = None
            tried = []
            for _ in range(int(req.get("bisect_steps", 7))):
                mid = (lo + hi) / 2 if best is not None or tried else float(budget)
                choice, size, steps = search(mid)
                tried.append((round(mid, 4), size))
                if size <= cap * (1 + 1e-12):
                    best, lo = (choice, mid), mid
                else:
                    hi = mid
                if score_seconds is None:
                    score_seconds = time.perf_counter() - t0
            if best is None:
                choice, size, steps = search(float(req["min_effective_bits"]))
                best = (choice, float(req["min_effective_bits"]))
            search_s = time.perf_counter() - t0
            results[str(budget)] = {"choice": best[0], "effective_bits": best[1], "score_steps": steps, "tried": tried,
                                    "seconds": search_s if budget == req["budgets"][0] else score_seconds + search_s}
    write_result({"peer": f"modelopt-{req['method']}", "results": results})


if __name__ == "__main__":
    main()
