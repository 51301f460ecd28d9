"""NVIDIA ModelOpt ``auto_quantize`` as a plan-quality peer: one format per layer, per budget.

Run by the peers' Python: ``python modelopt_plan.py REQUEST.json RESULT.json``. The request names
the model directory, the calibration texts, the candidate bit-widths, the group size (null = per
output channel), the budgets (average weight bits) and the method (``gradient`` or ``kl_div``). The
result gives, per budget, each target layer's chosen bits (16 = left in float) and the seconds to
plan: the first budget pays for calibration and scoring; later budgets reuse ModelOpt's own
checkpoint of the scores, and their time is the first budget's scoring time plus their own search.

Two things make ModelOpt's plan comparable to the others:

- ModelOpt counts ``num_bits`` a weight and no scales. The request's ``effective_bits`` (one per
  budget) is the benchmark's byte cap converted into that count (the scales every quantized layer
  carries, whatever its bits, are taken off first), so the plan lands at the same size in mpq's
  accounting. Without it the budget falls back to the nominal average bits.
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
from shared import read_request, write_result  # noqa: E402


def fmt(bits: int, group_size) -> dict:
    w = {"num_bits": bits, "axis": 0} if group_size is None else {"num_bits": bits, "block_sizes": {-1: group_size, "type": "static"}}
    return {"quant_cfg": [{"quantizer_name": "*", "enable": False}, {"quantizer_name": "*weight_quantizer", "cfg": w},
                          {"quantizer_name": "*input_quantizer", "enable": False}], "algorithm": "max"}


def recipe_bits(recipe) -> int:
    """ModelOpt counts a format as ``compression × 16`` bits a weight; "no quantization" is 16."""
    return int(round(float(recipe.compression) * 16))


def main() -> None:
    req = read_request()
    torch.manual_seed(0)
    torch.set_num_threads(int(req.get("threads", torch.get_num_threads())))
    import modelopt.torch.quantization as mtq

    results = {}
    score_seconds = None
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "autoquant.pth")
        for budget in req["budgets"]:
            t0 = time.perf_counter()
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
            bits = float(req.get("effective_bits", {}).get(str(budget), budget))
            t1 = time.perf_counter()
            model, state = mtq.auto_quantize(
                model, constraints={"effective_bits": bits},
                quantization_formats=[fmt(b, req["group_size"]) for b in req["bits"]],
                data_loader=data, forward_step=forward_step, disabled_layers=disabled or None,
                num_calib_steps=len(data), num_score_steps=steps, method=req["method"], checkpoint=ckpt, **kw,
            )
            seconds = time.perf_counter() - t1
            if score_seconds is None:
                score_seconds = time.perf_counter() - t0
                total = score_seconds
            else:
                total = score_seconds + seconds
            choice = {}
            for name, recipe in state["best"]["recipe"].items():
                choice[name.split(".quant_recipe")[0]] = recipe_bits(recipe)
            missing = [n for n in layers if n not in choice]
            results[str(budget)] = {"choice": choice, "seconds": total, "missing": missing, "score_steps": steps,
                                    "asked_effective_bits": bits,
                                    "effective_bits": state["best"]["constraints"].get("effective_bits")}
    write_result({"peer": f"modelopt-{req['method']}", "results": results})


if __name__ == "__main__":
    main()
