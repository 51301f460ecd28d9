"""The aligned ``.npz`` writer and the mapped reader (mpq/npz.py)."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from mpq import npz
from mpq.columnar import read_npz
from mpq.errors import DocumentError


def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "header": np.array('{"schema": "x"}'),
        "f8": rng.normal(size=300_001),
        "i8": np.arange(200_003, dtype=np.int64),
        "flag": rng.random(1_500_001) < 0.5,
        "names": np.array([f"layer.{i}" for i in range(70_001)]),
        "grid": np.asfortranarray(rng.normal(size=(1_001, 171))),
        "empty": np.zeros((0, 2), dtype=np.int64),
        "small": np.array([1.5, -2.0]),
    }


def write(path, data) -> None:
    with open(path, "wb") as f:
        npz.write_arrays(f, data)


def test_np_load_reads_what_the_writer_writes_and_the_data_is_aligned(tmp_path):
    path = tmp_path / "a.npz"
    write(path, arrays())
    with np.load(path, allow_pickle=False) as f:
        for k, v in arrays().items():
            np.testing.assert_array_equal(f[k], v)
            assert f[k].shape == v.shape and f[k].dtype == v.dtype
    with open(path, "rb") as fh, zipfile.ZipFile(fh) as zf:
        for info in zf.infolist():
            local = npz._LOCAL.unpack_from(fh.read(), info.header_offset) if fh.seek(0) == 0 else None
            assert (info.header_offset + 30 + local[-2] + local[-1]) % npz.ALIGN == 0, info.filename


def test_large_members_are_mapped_read_only_and_equal(tmp_path):
    path = tmp_path / "a.npz"
    write(path, arrays())
    got = npz.read_arrays(str(path))
    assert set(got) == set(arrays())
    for k, v in arrays().items():
        np.testing.assert_array_equal(got[k], v)
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
    for k in ("f8", "i8", "flag", "names", "grid"):  # over MAP_MIN_BYTES: mapped, not copied
        assert not got[k].flags.writeable and not got[k].flags.owndata and got[k].flags.aligned, k
    assert got["small"].flags.writeable  # small ones are copied by np.load


def test_files_from_np_savez_read_as_before(tmp_path):
    for save in (np.savez, np.savez_compressed):
        path = tmp_path / f"{save.__name__}.npz"
        save(path, **arrays())
        got = npz.read_arrays(str(path))
        for k, v in arrays().items():
            np.testing.assert_array_equal(got[k], v)


def test_a_corrupted_member_is_refused_by_its_checksum(tmp_path):
    path = tmp_path / "a.npz"
    write(path, arrays())
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as zf:
        info = zf.getinfo("f8.npy")
    raw[info.header_offset + 4096] ^= 0xFF  # a byte of the f8 data
    path.write_bytes(bytes(raw))
    with pytest.raises(DocumentError, match="cannot read .* as a columnar problem .*CRC"):
        read_npz(path, "columnar problem")


def test_a_single_npy_or_a_non_zip_gets_a_named_error(tmp_path):
    one = tmp_path / "one.npz"
    with open(one, "wb") as f:
        np.save(f, np.arange(3))
    with pytest.raises(DocumentError, match="single .npy array"):
        read_npz(one, "columnar problem")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DocumentError, match="cannot read .*junk.npz as a columnar plan"):
        read_npz(junk, "columnar plan")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(DocumentError, match="cannot read .*empty.npz as a columnar problem"):
        read_npz(empty, "columnar problem")


def test_the_writer_works_on_a_stream_without_tell():
    class Pipe(io.RawIOBase):
        def __init__(self):
            self.data = bytearray()

        def writable(self):
            return True

        def write(self, b):
            self.data += bytes(b)
            return len(b)

        def tell(self):
            raise OSError("not seekable")

    pipe = Pipe()
    npz.write_arrays(pipe, {"x": np.arange(10)})
    with np.load(io.BytesIO(bytes(pipe.data)), allow_pickle=False) as f:
        np.testing.assert_array_equal(f["x"], np.arange(10))
