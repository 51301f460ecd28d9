"""OpenVINO NNCF ``compress_weights`` mixed precision as a plan-quality peer (4-bit primary, 8-bit backup).

Run by the peers' Python: ``python nncf_plan.py REQUEST.json RESULT.json`` (the request as for
``modelopt_plan.py``). NNCF only mixes its primary 4-bit format with an 8-bit backup, so a budget of
B average bits asks for ``ratio = (8 - B) / 4`` of the weights in 4 bits; it ranks layers by its data-aware
sensitivity metric (``request["metric"]``, default ``hessian_input_activation``) and fills the ratio.
The result gives each target layer's bits, read from the decompressor NNCF attached to it.

NNCF's greedy fill stops short of the ratio when the next layer is large, which left its 5-bit plan
over the budget (6.824 MB against 6.677). When the request gives ``effective_bits`` per budget (the
byte cap in bits a weight, scales taken off, as for ModelOpt), the ratio is raised in steps of 0.02
until the plan's weight bits fit; the time of every attempt is charged to the plan.
"""
from __future__ import annotations

import os
import re
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
warnings.filterwarnings("ignore")

import torch  # noqa: E402

from encoder import batches, load_encoder, target_layers  # noqa: E402
from shared import read_request, write_result  # noqa: E402


def layer_bits(model, layers: list[str]) -> dict[str, int]:
    """Bits of each layer as NNCF compressed it, read from the decompressor hook on its weight (16 when none)."""
    found = {}
    for name, module in model.named_modules():
        cls = type(module).__name__
        m = re.search(r"post_hooks\.(.+):weight", name)
        if "Decompressor" in cls and m:
            found[m.group(1).replace(":", ".")] = 4 if cls.startswith("INT4") else 8
    return {layer: found.get(layer, 16) for layer in layers}


def main() -> None:
    req = read_request()
    torch.manual_seed(0)
    torch.set_num_threads(int(req.get("threads", torch.get_num_threads())))
    import nncf

    metric = getattr(nncf.SensitivityMetric, req.get("metric", "hessian_input_activation").upper())
    results = {}
    for budget in req["budgets"]:
        t0 = time.perf_counter()
        target = float(req.get("effective_bits", {}).get(str(budget), budget))
        ratio = min(1.0, max(0.0, (8.0 - float(budget)) / 4.0))
        attempts = 0
        while True:
            attempts += 1
            model, tok = load_encoder(req["model_dir"])
            layers = target_layers(model)
            numel = {n: model.get_submodule(n).weight.numel() for n in layers}
            data = batches(tok, req["calib"], req["batch_size"], req["seq_len"])
            model = nncf.compress_weights(
                model, mode=nncf.CompressWeightsMode.INT4_SYM, ratio=ratio,
                group_size=-1 if req["group_size"] is None else int(req["group_size"]),
                backup_mode=nncf.BackupMode.INT8_SYM, all_layers=True, sensitivity_metric=metric,
                dataset=nncf.Dataset(data), ignored_scope=nncf.IgnoredScope(patterns=[".*embeddings.*", ".*pooler.*"], validate=False),
            )
            choice = layer_bits(model, layers)
            bits = sum(numel[n] * min(b, 16) for n, b in choice.items()) / sum(numel.values())
            if bits <= target + 1e-9 or ratio >= 1.0:
                break
            ratio = min(1.0, round(ratio + 0.02, 4))
        seconds = time.perf_counter() - t0
        results[str(budget)] = {"choice": choice, "seconds": seconds, "ratio": ratio, "attempts": attempts, "bits": bits}
    write_result({"peer": f"nncf-{req.get('metric', 'hessian_input_activation')}", "results": results})


if __name__ == "__main__":
    main()
