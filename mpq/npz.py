"""``.npz`` files of the columnar documents: written with each array's data 64-byte aligned, read memory-mapped.

``np.load`` copies every array out of the zip into new memory. For a million-group problem that is
734 MB of fresh pages, and on a virtual machine their first touch costs more kernel time than the
copy itself (``benchmarks/big_problem.py``: 0.4 to 3.7 CPU s of system time for the same file).
An uncompressed member whose data is aligned for its dtype is mapped instead: its pages are the
page cache's, shared and never copied, and the array is read-only. Its CRC-32 is checked, as
``np.load`` checks it. Any other member (compressed, misaligned, small, an object array) is read by
``np.load`` itself, so files written by ``np.savez`` read as before.

The writer is ``np.savez`` with one difference: each member's local header carries a padding
extra field (id 0xD935, the one Android's zipalign uses) so that the array data starts on a
64-byte boundary of the file. Readers skip extra fields they do not know.
"""
from __future__ import annotations

import io
import mmap
import struct
import zipfile
import zlib
from typing import BinaryIO, Mapping, Optional

import numpy as np
from numpy.lib import format as npy

ALIGN = 64
#: members smaller than this are copied (a mapping's page tables cost more than the copy)
MAP_MIN_BYTES = 1 << 20
_PAD_ID = 0xD935
_LOCAL = struct.Struct("<4s2B4HL2L2H")  # a zip local file header, 30 bytes


def _npy_header(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    d = npy.header_data_from_array_1_0(a)
    try:
        npy.write_array_header_1_0(buf, d)
    except ValueError:  # a header over 64 KiB (a dtype with very many fields)
        buf = io.BytesIO()
        npy.write_array_header_2_0(buf, d)
    return buf.getvalue()


def write_arrays(f: BinaryIO, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to the open binary file ``f`` as an uncompressed ``.npz`` that ``np.load`` reads."""
    try:
        base = f.tell()
    except (OSError, AttributeError):  # a pipe: no alignment, still a valid file
        base = None
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, value in arrays.items():
            a = np.asarray(value)
            if not a.flags.c_contiguous:
                a = a.copy(order="C")  # np.ascontiguousarray would turn a 0-d array into 1-d
            if a.dtype.hasobject:
                raise ValueError(f"{name}: object arrays are not stored (they would need pickle)")
            header = _npy_header(a)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = len(header) + a.nbytes
            zip64 = info.file_size * 1.05 > zipfile.ZIP64_LIMIT  # as zipfile decides it for this size
            if base is not None:
                start = f.tell() - base + _LOCAL.size + len(info.filename.encode("ascii")) + 4 + (20 if zip64 else 0)
                pad = -start % ALIGN  # the npy header is a multiple of 64 bytes: data aligns with its start
                info.extra = struct.pack("<HH", _PAD_ID, pad) + bytes(pad)
            with zf.open(info, "w") as out:
                out.write(header)
                out.write(a.reshape(-1).view(np.uint8))


def _mapped(fh: BinaryIO) -> dict[str, np.ndarray]:
    """The members of the zip in ``fh`` that can be mapped, each checked against its CRC-32."""
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(fh) as zf:
        infos = [i for i in zf.infolist() if i.compress_type == zipfile.ZIP_STORED and not i.flag_bits & 1
                 and i.file_size >= MAP_MIN_BYTES and i.filename.endswith(".npy")]
        if not infos:
            return out
        view = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        for info in infos:
            fields = _LOCAL.unpack_from(view, info.header_offset)
            if fields[0] != b"PK\x03\x04":
                continue
            start = info.header_offset + _LOCAL.size + fields[-2] + fields[-1]
            array = _array_at(view, start, info.file_size)
            if array is not None and zlib.crc32(memoryview(view)[start:start + info.file_size]) == info.CRC:
                out[info.filename[:-4]] = array
    return out


def _array_at(view: mmap.mmap, start: int, size: int) -> Optional[np.ndarray]:
    head = io.BytesIO(view[start:start + min(size, 1 << 17)])
    version = npy.read_magic(head)
    shape, fortran, dtype = (npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0)(head)
    offset = start + head.tell()
    count = int(np.prod(shape, dtype=np.int64))
    if dtype.hasobject or offset % max(dtype.alignment, 1) or head.tell() + count * dtype.itemsize != size:
        return None  # np.load reads it, or names what is wrong with it
    flat = np.frombuffer(view, dtype=dtype, count=count, offset=offset)
    return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)


def read_arrays(path: str) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path`` (no pickles): large uncompressed aligned members mapped
    read-only, the rest read by ``np.load``. Raises what ``np.load`` raises for a file it cannot read."""
    mapped: dict[str, np.ndarray] = {}
    try:
        with open(path, "rb") as fh:
            mapped = _mapped(fh)
    except (OSError, ValueError, EOFError, struct.error, zipfile.BadZipFile, zipfile.LargeZipFile):
        mapped = {}  # not a zip it can map: np.load decides
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError("this is a single .npy array, not an .npz archive of named arrays")
    with loaded as f:
        return {k: mapped[k] if k in mapped else f[k] for k in f.files}
