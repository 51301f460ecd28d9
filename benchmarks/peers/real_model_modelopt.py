"""NVIDIA ModelOpt ``auto_quantize`` (gradient score) on a Hugging Face model, timed: the peer side of real_model.py.

Run by the peers' Python (never imported by mpq)::

    /work/peers-venv/bin/python benchmarks/peers/real_model_modelopt.py REQUEST.json RESULT.json

The request names the model directory, the calibration text file (one sample a line), samples,
batch size, sequence length, the weight bit-widths and group sizes (null: per output channel;
weight-only, max calibration; one format per bits x group size) and the average-bits budget.
Calibration batches are the ones mpq makes (``mpq.hf.load_hf_workload``): right padding,
truncation to the sequence length, samples of similar token length in one batch (longest first,
ties in file order; batches in the order of their first sample). The result lists the batches'
shapes, so the caller can check they are mpq's. An encoder's loss is
ModelOpt's documented way to score a model without labels: an MSE to its own full-precision
output with targets sampled around it (Gaussian noise of the output's scale), since the plain
self-MSE has zero gradient; a causal LM uses its next-token cross-entropy. The result has the
wall time (model load, calibration and scoring included), the peak resident memory and the plan.
"""
from __future__ import annotations

import json
import resource
import sys
import time
import warnings

warnings.filterwarnings("ignore")


def fmt(bits: int, group_size) -> dict:
    w = {"num_bits": bits, "axis": 0} if group_size is None else {"num_bits": bits, "block_sizes": {-1: group_size, "type": "static"}}
    return {"quant_cfg": [{"quantizer_name": "*", "enable": False},
                          {"quantizer_name": "*weight_quantizer", "cfg": w},
                          {"quantizer_name": "*input_quantizer", "enable": False}], "algorithm": "max"}


def length_groups(tok, texts: list[str], batch_size: int, max_length: int) -> list[list[int]]:
    """mpq.hf.length_groups, restated (this script runs without mpq): sample indices batched by token length."""
    lengths = [len(ids) for ids in tok(texts, truncation=True, max_length=max_length)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: (-lengths[i], i))
    groups = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    return sorted((sorted(g) for g in groups), key=lambda g: g[0])


def main() -> None:
    req = json.loads(open(sys.argv[1]).read())
    t0 = time.perf_counter()
    import torch
    import modelopt.torch.quantization as mtq
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    if req.get("threads"):
        torch.set_num_threads(int(req["threads"]))
    path = req["model_dir"]
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    causal = any(a.endswith("ForCausalLM") for a in (config.architectures or []))
    cls = AutoModelForCausalLM if causal else AutoModel
    model = cls.from_pretrained(path, local_files_only=True, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    texts = [l for l in open(req["calib"], encoding="utf-8").read().splitlines() if l.strip()][: req["samples"]]
    data = []
    for group in length_groups(tok, texts, req["batch_size"], req["seq_len"]):
        enc = tok([texts[i] for i in group], return_tensors="pt", padding=True, truncation=True, max_length=req["seq_len"])
        batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if causal:
            labels = enc["input_ids"].clone()
            labels[enc["attention_mask"] == 0] = -100
            batch["labels"] = labels
        data.append(batch)
    index = {id(b): i for i, b in enumerate(data)}
    if causal:
        def forward_step(m, b):
            return m(**b)

        def loss_func(out, b):
            return out.loss
    else:
        with torch.no_grad():
            teachers = [model(**b).last_hidden_state.detach() for b in data]

        def forward_step(m, b):
            return m(**b).last_hidden_state

        def loss_func(out, b):
            i = index[id(b)]
            teacher = teachers[i]
            noise = torch.randn(teacher.shape, generator=torch.Generator().manual_seed(i)) * teacher.std()
            mask = b["attention_mask"].unsqueeze(-1).to(out.dtype)
            return (((out - (teacher + noise)) ** 2) * mask).sum() / mask.sum() / out.shape[-1]

    t1 = time.perf_counter()
    model, state = mtq.auto_quantize(
        model, constraints={"effective_bits": float(req["avg_bits"])}, quantization_formats=[fmt(b, g) for b in req["bits"] for g in req.get("group_sizes", [None])],
        data_loader=data, forward_step=forward_step, loss_func=loss_func, num_calib_steps=len(data), num_score_steps=len(data),
        method="gradient",
    )
    t2 = time.perf_counter()
    choice = {name.split(".quant_recipe")[0]: int(round(float(r.compression) * 16)) for name, r in state["best"]["recipe"].items()}
    out = {"seconds": t2 - t0, "load_seconds": t1 - t0, "auto_quantize_seconds": t2 - t1,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "layers": len(choice),
           "cpu_seconds": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
           "batches": len(data), "batch_shapes": [list(b["input_ids"].shape) for b in data], "effective_bits": state["best"]["constraints"].get("effective_bits"), "choice": choice}
    open(sys.argv[2], "w").write(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
