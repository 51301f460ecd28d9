"""GPTQModel's ``dynamic`` resolution, ported from GPTQModel 7.3.6 ``gptqmodel/quantization/config.py``.

GPTQModel cannot be imported with a CPU-only torch (its package import pulls torchvision, whose
PyPI build needs CUDA operators, and it pins numpy 2.2.6), so the export tests resolve layers with
this port of its matcher: ``-:`` keys are moved first; a key whose pattern is an anchored literal
(``^a\\.b$``) is looked up exactly, any other is a regex tried with ``match``; the earliest key in
that order wins; ``-:`` means skip (False), no match means the base config (None).
"""
from __future__ import annotations

import re
from typing import Any, Optional, Union

VALID_BITS = (2, 3, 4, 5, 6, 7, 8)  # QuantizeConfig.bits choices; 5-7 force the planar gptq_p format
VALID_GROUP_SIZES = (-1, 16, 32, 64, 128, 256, 512, 1024)


def literal_of(raw: str) -> Optional[str]:
    """``_extract_literal_regex_pattern``: the literal an anchored, escaped pattern stands for, else None."""
    if not raw.startswith("^") or not raw.endswith("$"):
        return None
    raw = raw[1:-1]
    out, i = [], 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\":
            if i + 1 >= len(raw):
                return None
            nxt = raw[i + 1]
            if nxt == "\\":
                out.append("\\")
            elif nxt.isalnum():
                return None
            else:
                out.append(nxt)
            i += 2
            continue
        if ch in ".^$*+?{}[]()|":
            return None
        out.append(ch)
        i += 1
    return "".join(out)


def ordered(dynamic: dict) -> dict:
    """``QuantizeConfig.__post_init__`` puts every negative key first, keeping relative order."""
    return {**{k: v for k, v in dynamic.items() if k.startswith("-")}, **{k: v for k, v in dynamic.items() if not k.startswith("-")}}


def resolve(dynamic: dict, module_name: str) -> Union[dict, bool, None]:
    """``_resolve_dynamic_override``: the first matching override dict, False for ``-:``, None for no match."""
    exact: dict[str, tuple[int, Any]] = {}
    regexes = []
    for index, (pattern, overrides) in enumerate(ordered(dynamic).items()):
        negative = pattern.startswith("-:")
        raw = pattern[2:] if pattern.startswith(("-:", "+:")) else pattern
        literal = literal_of(raw)
        if literal is None:
            regexes.append((index, negative, re.compile(raw), overrides))
        elif literal not in exact:
            exact[literal] = (index, False if negative else dict(overrides))
    best = exact.get(module_name)
    matched = best[1] if best else None
    for index, negative, compiled, overrides in regexes:
        if best is not None and index > best[0]:
            break
        if compiled.match(module_name):
            matched = False if negative else dict(overrides)
            break
    return matched


def dynamic_get(config: dict, module_name: str, key: str) -> Any:
    """``QuantizeConfig.dynamic_get(name, key, default=base)`` for a config given as keyword arguments."""
    overrides = resolve(config.get("dynamic") or {}, module_name)
    if overrides is False:
        return False
    if overrides is None or key not in overrides:
        return config[key]
    return overrides[key]


def load_real_quantize_config(modules: dict):
    """GPTQModel's own ``QuantizeConfig``, loaded from its ``quantization/config.py`` without running the
    package ``__init__`` (which needs torchvision); None when GPTQModel is not installed. ``modules`` is
    ``sys.modules`` (or a patched view of it) to register the skeleton packages in."""
    import importlib.util
    import types
    from pathlib import Path

    spec = importlib.util.find_spec("gptqmodel")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    for name, sub in [("gptqmodel", ""), ("gptqmodel.quantization", "quantization"), ("gptqmodel.utils", "utils"), ("gptqmodel.adapter", "adapter")]:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(root / sub)]
        modules[name] = pkg
    file_spec = importlib.util.spec_from_file_location("gptqmodel.quantization.config", root / "quantization" / "config.py")
    module = importlib.util.module_from_spec(file_spec)
    modules["gptqmodel.quantization.config"] = module
    file_spec.loader.exec_module(module)
    return module.QuantizeConfig
