"""Problem files: ``mpq.problem/v1`` JSON or its columnar ``.npz`` form, chosen by the file's suffix."""
from __future__ import annotations

from pathlib import Path

from .columnar import ProblemColumns, load_columns
from .problem_json import read_columns
from .schema import Problem, document_from_bytes, load_document, save_document


def load_problem(path: str | Path, columns: bool = False):
    """A problem from ``.json`` (``mpq.problem/v1``) or its columnar ``.npz`` form.

    ``columns=True`` reads a JSON problem straight into :class:`ProblemColumns` when
    :func:`mpq.problem_json.read_columns` takes it on (valid, no ties or pairs), and with the JSON
    models otherwise, so errors are the models' either way.
    """
    if str(path).endswith(".npz"):
        return load_columns(path)
    if not columns:
        return load_document(path, Problem)
    try:
        data = Path(path).read_bytes()  # once: the path may be a pipe
    except OSError:
        return load_document(path, Problem)  # which says why it cannot be read
    cols = read_columns(data)
    return cols if cols is not None else document_from_bytes(data, Problem, str(path))


def save_problem(problem, path: str | Path) -> Path:
    """Write a problem (JSON model or columns) as ``.npz`` columns or ``.json``, by the file's suffix."""
    path = Path(path)
    if path.suffix == ".npz":
        cols = problem if isinstance(problem, ProblemColumns) else ProblemColumns.from_problem(problem)
        return cols.save(path)
    save_document(problem.to_problem() if isinstance(problem, ProblemColumns) else problem, path)
    return path
