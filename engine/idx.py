"""IDX files (the MNIST container format), plain or gzip-compressed, read into numpy arrays.

Every way a file can be damaged ends in one `DataError` line naming the file, the fault and the fix.
"""

from __future__ import annotations

import os
import zlib
from math import prod
from pathlib import Path

import numpy as np

__all__ = ["DataError", "read_idx", "decompress", "parse_idx", "REDOWNLOAD"]

REDOWNLOAD = "delete it and download it again"

# IDX type code -> big-endian numpy dtype, as in LeCun's format description.
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


class DataError(ValueError):
    """A data file or data set that is missing, damaged or not the expected one; the message says what to do."""


def _fail(path: str | os.PathLike, problem: str, advice: str = REDOWNLOAD) -> DataError:
    """One-line error: which file, what is wrong, what to do."""
    return DataError(f"{path}: {problem}; {advice}")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip detected by its magic bytes, not its name) into a native-endian array."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc}); check the path and its permissions") from None
    return parse_idx(decompress(data, path), path)


def decompress(data: bytes, path: str | os.PathLike = "<bytes>") -> bytes:
    """Return the IDX bytes: gunzipped if `data` starts with the gzip magic, else `data` unchanged."""
    if not data.startswith(_GZIP_MAGIC):
        return data
    parts: list[bytes] = []
    rest = data
    while True:  # a gzip file may hold several members back to back
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            parts.append(inflater.decompress(rest))
            parts.append(inflater.flush())
        except zlib.error as exc:
            raise _fail(path, f"the gzip stream is corrupt ({exc})") from None
        if not inflater.eof:
            raise _fail(path, "the gzip stream ends early: the file is truncated")
        rest = inflater.unused_data
        if not rest:
            return b"".join(parts)
        if not rest.startswith(_GZIP_MAGIC):
            raise _fail(path, f"{len(rest)} bytes of trailing garbage after the gzip stream")


def parse_idx(data: bytes, path: str | os.PathLike = "<bytes>") -> np.ndarray:
    """Decode uncompressed IDX bytes, checking magic, dimensions and exact payload length."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES or data[3] == 0:
        head = data[:4].hex(" ") or "nothing"
        raise _fail(
            path,
            f"not an IDX file (starts with {head}; expected 00 00, a type code 08/09/0b/0c/0d/0e "
            "and the number of dimensions)",
        )
    dtype, ndim = _DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _fail(path, f"the header needs {header} bytes for {ndim} dimensions, found {len(data)}: the file is truncated")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = prod(dims) * dtype.itemsize
    found = len(data) - header
    what = {3: "image data", 1: "label data"}.get(ndim, "data")
    if found < expected:
        raise _fail(path, f"expected {expected} bytes of {what} for shape {dims}, found {found}: the file is truncated")
    if found > expected:
        raise _fail(path, f"expected {expected} bytes of {what} for shape {dims}, found {found}: {found - expected} trailing bytes")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # astype copies: native byte order, writable
