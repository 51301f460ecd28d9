"""Every subcommand with malformed files and arguments: a named error, a documented exit code, no
traceback, and no existing file changed (tests/helpers/cli_fuzz.py lists the cases)."""
from __future__ import annotations

from tests.helpers.cli_fuzz import cases, run_case


def test_every_malformed_command_is_a_named_error_with_a_documented_exit_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPQ_CACHE_DIR", str(tmp_path / ".cache"))
    monkeypatch.delenv("MPQ_TOKEN", raising=False)
    all_cases = cases(tmp_path)
    assert len(all_cases) >= 200
    bad = []
    for case in all_cases:
        outcome = run_case(case, tmp_path)
        if not outcome.ok:
            bad.append(f"mpq {' '.join(case.argv)} -> exit {outcome.code}, lost {outcome.data_lost}: {outcome.stderr.strip()[-400:]}")
    assert not bad, f"{len(bad)} of {len(all_cases)} cases:\n" + "\n".join(bad)
