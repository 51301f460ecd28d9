"""OpenVINO NNCF ``compress_weights`` mixed precision as a plan-quality peer (4-bit primary, 8-bit backup).

Run by the peers' Python: ``python nncf_plan.py REQUEST.json RESULT.json`` (the request as for
``modelopt_plan.py``, plus ``primary`` and ``backup``: the option ids of its INT4 and INT8 formats in
the benchmark's grid, and ``group_size`` of its INT4 format, null = per channel). NNCF only mixes an
INT4 primary (per channel or in groups, here 128) with an INT8 backup: it cannot give a layer 2, 3,
5 or 6 bits. It ranks layers by its data-aware sensitivity metric (``request["metric"]``, default
``hessian_input_activation``) and puts a ``ratio`` of the weights in INT4.

The ratio is tuned to the byte cap in mpq's accounting: it starts where the cap would be met if
every layer's bytes scaled with its weights, and is raised in steps of 0.02 until the plan fits
(NNCF's greedy fill can stop short of the ratio when the next layer is large); the time of every
attempt is charged to the plan.
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
from shared import plan_bytes, read_request, write_result  # noqa: E402


def layer_option(model, layers: list[str], primary: str, backup: str) -> dict[str, str]:
    """Option of each layer as NNCF compressed it, read from the decompressor hook on its weight (fp16 when none)."""
    found = {}
    for name, module in model.named_modules():
        cls = type(module).__name__
        m = re.search(r"post_hooks\.(.+):weight", name)
        if "Decompressor" in cls and m:
            found[m.group(1).replace(":", ".")] = primary if cls.startswith("INT4") else backup
    return {layer: found.get(layer, "fp16") for layer in layers}


def main() -> None:
    req = read_request()
    torch.manual_seed(0)
    torch.set_num_threads(int(req.get("threads", torch.get_num_threads())))
    import nncf

    metric = getattr(nncf.SensitivityMetric, req.get("metric", "hessian_input_activation").upper())
    primary, backup, sizes = req["primary"], req["backup"], req["sizes"]
    all4 = sum(s[primary] for s in sizes.values())
    all8 = sum(s[backup] for s in sizes.values())
    results = {}
    for budget in req["budgets"]:
        t0 = time.perf_counter()
        cap = float(req["caps"][str(budget)])
        ratio = min(1.0, max(0.0, round((all8 - cap) / (all8 - all4), 2)))
        attempts = 0
        while True:
            attempts += 1
            model, tok = load_encoder(req["model_dir"])
            layers = target_layers(model)
            data = batches(tok, req["calib"], req["batch_size"], req["seq_len"])
            model = nncf.compress_weights(
                model, mode=nncf.CompressWeightsMode.INT4_SYM, ratio=ratio,
                group_size=-1 if req["group_size"] is None else int(req["group_size"]),
                backup_mode=nncf.BackupMode.INT8_SYM, all_layers=True, sensitivity_metric=metric,
                dataset=nncf.Dataset(data), ignored_scope=nncf.IgnoredScope(patterns=[".*embeddings.*", ".*pooler.*"], validate=False),
            )
            choice = layer_option(model, layers, primary, backup)
            size = plan_bytes(choice, sizes)
            if size <= cap * (1 + 1e-12) or ratio >= 1.0:
                break
            ratio = min(1.0, round(ratio + 0.02, 4))
        seconds = time.perf_counter() - t0
        results[str(budget)] = {"choice": choice, "seconds": seconds, "ratio": ratio, "attempts": attempts, "bytes": size}
    write_result({"peer": f"nncf-{req.get('metric', 'hessian_input_activation')}", "results": results})


if __name__ == "__main__":
    main()
