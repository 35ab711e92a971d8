"""IDX files (the MNIST container format), plain or gzip-compressed, read into numpy arrays.

Every way a file can be damaged ends in one `DataError` line naming the file, the fault and the fix.
"""

from __future__ import annotations

import os
import zlib
from math import prod
from pathlib import Path

import numpy as np

from ..errors import DataError

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


def decompress(data: bytes, path: str | os.PathLike = "<bytes>", limit: int | None = None) -> bytes:
    """Return the IDX bytes: gunzipped if `data` starts with the gzip magic, else `data` unchanged.

    Never more than the IDX header declares (nor `limit` bytes, when given) is inflated: a small
    file that would expand to gigabytes (a gzip bomb) is refused after a few megabytes."""
    if not data.startswith(_GZIP_MAGIC):
        return data
    out = bytearray()
    cap = limit
    header_seen = False
    rest = data
    while True:  # a gzip file may hold several members back to back
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        pending = rest
        try:
            while not inflater.eof:
                room = _CHUNK if cap is None else max(1, min(_CHUNK, cap + 1 - len(out)))
                chunk = inflater.decompress(pending, room)
                pending = inflater.unconsumed_tail
                out += chunk
                if not header_seen:
                    declared = _declared_size(out)
                    if declared == "bad":
                        return bytes(out)  # not IDX: parse_idx says so
                    if declared is not None:
                        header_seen = True
                        _check_fits(declared, path, out)
                        cap = declared if cap is None else min(cap, declared)
                if cap is not None and len(out) > cap:
                    raise _fail(path, f"the gzip stream is corrupt: it inflates to more than the {cap:,} bytes "
                                      f"{'its IDX header declares' if cap != limit else 'this file may hold'} "
                                      "(damaged, or not the real file)")
                if not chunk and not pending:
                    break
        except zlib.error as exc:
            raise _fail(path, f"the gzip stream is corrupt ({exc})") from None
        if not inflater.eof:
            raise _fail(path, "the gzip stream ends early: the file is truncated")
        rest = inflater.unused_data
        if not rest:
            return bytes(out)
        if not rest.startswith(_GZIP_MAGIC):
            raise _fail(path, f"{len(rest)} bytes of trailing garbage after the gzip stream")


_CHUNK = 1 << 20


def _declared_size(head) -> int | str | None:
    """The total size the IDX header at the start of `head` declares; None until the header is
    complete; "bad" if it is no IDX header."""
    if len(head) < 4:
        return None
    if head[0] != 0 or head[1] != 0 or head[2] not in _DTYPES or head[3] == 0:
        return "bad"
    ndim = head[3]
    if len(head) < 4 + 4 * ndim:
        return None
    dims = np.frombuffer(bytes(head[4:4 + 4 * ndim]), dtype=">u4")
    return 4 + 4 * ndim + prod(int(d) for d in dims) * _DTYPES[head[2]].itemsize


def _check_fits(declared: int, path, head) -> None:
    """A header declaring more than the memory available is damaged (or hostile): refuse before inflating."""
    from ..machine import available, human

    have = available()
    if have is not None and declared > have:
        ndim = head[3]
        dims = tuple(int(d) for d in np.frombuffer(bytes(head[4:4 + 4 * ndim]), dtype=">u4"))
        raise _fail(path, f"its header declares shape {dims}, {human(declared)}, more than the {human(have)} of "
                          "memory available: the header is damaged")


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
        raise _fail(path, f"the header needs {header} bytes for {ndim} dimensions, found {len(data)}: "
                          "the file is truncated")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = prod(dims) * dtype.itemsize
    found = len(data) - header
    what = {3: "image data", 1: "label data"}.get(ndim, "data")
    if found < expected and expected > max(1 << 32, 64 * found):
        raise _fail(path, f"its header declares shape {dims} (about {expected:.2g} bytes of {what}), but the file "
                          f"holds {found:,}: the header is damaged")
    if found < expected:
        raise _fail(path, f"expected {expected} bytes of {what} for shape {dims}, found {found}: the file is truncated")
    if found > expected:
        raise _fail(path, f"expected {expected} bytes of {what} for shape {dims}, found {found}: "
                          f"{found - expected} trailing bytes")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # astype copies: native byte order, writable
