"""On-disk cache of sensitivity tables, keyed by model fingerprint, calibration data and settings."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from mpq.graph import LayerGraph
from mpq.quant import QuantSpec
from mpq.schema import SensitivityTable, dump_document, parse_document
from mpq.workload import StepInputs, Workload

from .base import Estimator, check_finite_scores


def cache_dir() -> Path:
    return Path(os.environ.get("MPQ_CACHE_DIR") or Path.home() / ".cache" / "mpq")


def _hash_obj(h: "hashlib._Hash", obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            h.update(str(k).encode())
            _hash_obj(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for x in obj:
            _hash_obj(h, x)
    elif isinstance(obj, StepInputs):  # the batch and the code of the step that runs it
        h.update(callable_digest(obj.forward_step).encode())
        _hash_obj(h, obj.batch)
    else:
        h.update(repr(obj).encode())


def callable_digest(fn: Any) -> str:
    """A function's name and bytecode, so a changed loss or forward step does not reuse a cached table."""
    code = getattr(fn, "__code__", None)
    name = getattr(fn, "__module__", "") + ":" + getattr(fn, "__qualname__", type(fn).__qualname__)
    if code is None:
        return name
    consts = repr([c for c in code.co_consts if not hasattr(c, "co_code")])  # nested code objects repr with addresses
    return name + ":" + hashlib.sha256(code.co_code + consts.encode() + repr(code.co_names).encode()).hexdigest()[:16]


def data_fingerprint(workload: Workload) -> str:
    h = hashlib.sha256()
    _hash_obj(h, list(workload.batches))
    return "sha256:" + h.hexdigest()


def cache_key(estimator: Estimator, workload: Workload, options: Optional[Mapping[str, QuantSpec]]) -> str:
    payload = {
        "estimator": estimator.name,
        "config": estimator.config(),
        "model": workload.fingerprint(),
        "data": data_fingerprint(workload) if estimator.needs_data else None,
        "loss": callable_digest(workload.loss_fn) if estimator.needs_data else None,
        "options": {k: vars(v) for k, v in sorted((options or {}).items())} if estimator.per_option else None,
        "version": 1,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def estimate(
    estimator: Estimator,
    workload: Workload,
    graph: LayerGraph,
    options: Optional[Mapping[str, QuantSpec]] = None,
    *,
    use_cache: bool = True,
) -> SensitivityTable:
    """Run ``estimator`` or return its cached table for the same model, data and settings."""
    path = cache_dir() / f"{estimator.name}-{cache_key(estimator, workload, options)}.json"
    if use_cache and path.exists():
        try:
            table = parse_document(json.loads(path.read_text()), SensitivityTable, str(path))
            if set(table.layers) == set(graph.names):
                table.meta["cached"] = True
                return table
        except Exception:  # a corrupt or stale cache entry is recomputed, never trusted
            pass
    table = check_finite_scores(estimator.estimate(workload, graph, options))
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(dump_document(table))
        tmp.replace(path)
    return table
