"""``mpq serve`` refuses unsafe or impossible settings with a named error, and keeps secrets off the screen."""
from __future__ import annotations

import pytest

from mpq.cli import main


@pytest.fixture(autouse=True)
def no_token(monkeypatch):
    monkeypatch.delenv("MPQ_TOKEN", raising=False)


@pytest.mark.parametrize("db, says", [
    ("x.db", "--db 'x.db' is not a database URL"),
    ("postgresql://mpq:hunter2@127.0.0.1:1/mpq", "cannot open the service's database"),
])
def test_a_bad_or_unreachable_database_is_a_named_error_with_the_password_masked(capsys, db, says):
    assert main(["serve", "--db", db, "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and "hunter2" not in err


def test_a_database_in_a_read_only_place_is_a_named_error(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        import os

        if os.access(ro, os.W_OK):
            pytest.skip("running as root: directory permissions are not enforced")
        assert main(["serve", "--db", f"sqlite:///{ro / 'mpq.db'}", "--port", "1"]) == 2
        assert "cannot open the service's database" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


def test_the_token_comes_from_a_file_or_the_environment_never_the_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--token", "s3cret"])
    empty = tmp_path / "token"
    empty.write_text("\n")
    assert main(["serve", "--host", "0.0.0.0", "--token-file", str(empty)]) == 2
    assert "is empty" in capsys.readouterr().err
    assert main(["serve", "--host", "0.0.0.0", "--token-file", str(tmp_path / "missing")]) == 2
    assert "cannot read it" in capsys.readouterr().err


def test_a_search_storage_that_is_not_a_url_is_refused(capsys):
    assert main(["serve", "--search-storage", "searches.db", "--port", "1"]) == 2
    assert "--search-storage 'searches.db' is not a database URL" in capsys.readouterr().err


def test_urls_are_masked_for_the_banner():
    from mpq.service.cli import masked

    assert masked("postgresql://mpq:hunter2@db:5432/mpq") == "postgresql://mpq:***@db:5432/mpq"
