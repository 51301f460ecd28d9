"""``-o FILE``: atomic for regular files, direct for devices and pipes, a named error for impossible paths."""
from __future__ import annotations

import json
import os
import stat
import threading

import pytest

from mpq.cli import main
from mpq.errors import OutputError
from mpq.output import check_output, write_output


@pytest.fixture()
def problem_file(tmp_path):
    from tests.helpers.service import problem

    path = tmp_path / "problem.json"
    path.write_text(json.dumps(problem()))
    return path


def drain(path, into: list) -> threading.Thread:
    """A reader on the FIFO, as a shell's process substitution would be."""
    def run():
        with open(path, "rb") as f:
            into.append(f.read())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_fifo_is_written_through_and_stays_a_fifo(tmp_path, problem_file):
    fifo = tmp_path / "plan.fifo"
    os.mkfifo(fifo)
    got: list = []
    reader = drain(fifo, got)
    assert main(["solve", str(problem_file), "-o", str(fifo)]) == 0
    reader.join(10)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert json.loads(got[0])["schema"] == "mpq.plan/v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.fifo", "problem.json"]  # no temporary left behind


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a device node needs root")
def test_a_character_device_is_written_through_and_stays_a_device(tmp_path, problem_file):
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # the same device as /dev/null
    for argv in (["solve", str(problem_file), "-o", str(null)], ["solve", str(problem_file), "-o", str(null) + ".npz"]):
        if argv[-1].endswith(".npz"):
            os.mknod(argv[-1], 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        assert main(argv) == 0
        assert stat.S_ISCHR(os.stat(argv[-1]).st_mode) and os.stat(argv[-1]).st_rdev == os.makedev(1, 3)
    assert main(["frontier", str(problem_file), "-o", str(null)]) == 0
    assert stat.S_ISCHR(os.stat(null).st_mode)


def test_dev_stdout_is_written_in_place(tmp_path, problem_file, capfd):
    assert main(["solve", str(problem_file), "-o", "/dev/stdout"]) == 0  # here fd 1 is pytest's capture file
    assert '"schema": "mpq.plan/v1"' in capfd.readouterr().out


def test_a_regular_file_is_replaced_atomically_and_keeps_its_mode(tmp_path, problem_file):
    out = tmp_path / "plan.json"
    out.write_text("old")
    out.chmod(0o640)
    assert main(["solve", str(problem_file), "-o", str(out)]) == 0
    assert json.loads(out.read_text())["schema"] == "mpq.plan/v1"
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


def test_a_symlink_to_a_regular_file_stays_a_symlink(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_output(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / "plan.json"
    out.write_text("good")

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        write_output(out, boom)
    assert out.read_text() == "good" and [p.name for p in tmp_path.iterdir()] == ["plan.json"]


@pytest.mark.parametrize("bad, says", [(".", "is a directory"), ("{tmp}", "is a directory"),
                                       ("{tmp}/missing/plan.json", "does not exist")])
def test_impossible_outputs_are_named_errors(tmp_path, bad, says):
    path = bad.format(tmp=tmp_path)
    for call in (lambda: write_output(path, "x", what="-o"), lambda: check_output(path, "-o")):
        with pytest.raises(OutputError) as e:
            call()
        assert str(e.value).startswith(f"-o {path}") and says in str(e.value)
