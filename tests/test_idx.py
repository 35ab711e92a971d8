"""engine.data.idx: the real MNIST test set reads right, and every kind of damage is one clear DataError."""

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.data.idx import DataError, read_idx

from conftest import MNIST, needs_mnist

IMAGES = MNIST / "t10k-images-idx3-ubyte.gz"
LABELS = MNIST / "t10k-labels-idx1-ubyte.gz"

TYPE_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """Independent IDX writer for the tests: magic, big-endian dims, big-endian payload."""
    code = TYPE_CODES[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def assert_clear(exc: pytest.ExceptionInfo, path: Path, *fragments: str) -> None:
    """The message is one line, names the file, says what is wrong and what to do."""
    message = str(exc.value)
    assert "\n" not in message
    assert str(path) in message
    assert "delete it and download it again" in message
    for fragment in fragments:
        assert fragment in message, message


@needs_mnist
def test_real_mnist_test_set():
    images, labels = read_idx(IMAGES), read_idx(LABELS)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert labels.min() == 0 and labels.max() == 9
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert images.min() == 0 and images.max() == 255
    # The bytes behind the array are exactly the published file's payload.
    payload = gzip.decompress(IMAGES.read_bytes())
    assert hashlib.sha256(payload[16:]).digest() == hashlib.sha256(images.tobytes()).digest()


@needs_mnist
def test_raw_copy_reads_identically_whatever_its_name(tmp_path):
    raw = tmp_path / "images.gz"  # not gzip despite the name: detection is by magic bytes
    raw.write_bytes(gzip.decompress(IMAGES.read_bytes()))
    assert np.array_equal(read_idx(raw), read_idx(IMAGES))


@needs_mnist
def test_gzip_without_gz_name(tmp_path):
    renamed = tmp_path / "labels.idx"
    renamed.write_bytes(LABELS.read_bytes())
    assert read_idx(renamed)[:5].tolist() == [7, 2, 1, 0, 4]


@needs_mnist
def test_truncated_gzip(tmp_path):
    bad = tmp_path / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(IMAGES.read_bytes()[:1234])
    with pytest.raises(DataError) as exc:
        read_idx(bad)
    assert_clear(exc, bad, "truncated")


@needs_mnist
def test_truncated_raw_payload(tmp_path):
    bad = tmp_path / "t10k-images-idx3-ubyte"
    bad.write_bytes(gzip.decompress(IMAGES.read_bytes())[: 16 + 1234])
    with pytest.raises(DataError) as exc:
        read_idx(bad)
    assert_clear(exc, bad, "expected 7840000 bytes of image data", "found 1234", "truncated")


@needs_mnist
def test_corrupt_gzip_stream(tmp_path):
    data = bytearray(IMAGES.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the CRC (or the deflate stream itself) must catch this
    bad = tmp_path / "flipped.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError) as exc:
        read_idx(bad)
    assert_clear(exc, bad, "gzip stream is corrupt")


def test_wrong_magic(tmp_path):
    data = bytearray(idx_bytes(np.zeros((3, 2, 2), np.uint8)))
    data[2] = 0x07  # not a type code
    bad = tmp_path / "wrong-magic"
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError) as exc:
        read_idx(bad)
    assert_clear(exc, bad, "not an IDX file", "00 00 07 03")


def test_trailing_bytes_in_raw_file(tmp_path):
    bad = tmp_path / "trailing"
    bad.write_bytes(idx_bytes(np.arange(10, dtype=np.uint8)) + b"junk")
    with pytest.raises(DataError) as exc:
        read_idx(bad)
    assert_clear(exc, bad, "expected 10 bytes of label data", "found 14", "4 trailing bytes")


@needs_mnist
def test_trailing_garbage_after_gzip_stream(tmp_path):
    bad = tmp_path / "labels.gz"
    bad.write_bytes(LABELS.read_bytes() + b"GARBAGE!")
    with pytest.raises(DataError) as exc:
        read_idx(bad)
    assert_clear(exc, bad, "8 bytes of trailing garbage after the gzip stream")


def test_non_gzip_garbage_file(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(b"<html><body>404 Not Found</body></html>\n")
    with pytest.raises(DataError) as exc:
        read_idx(bad)
    assert_clear(exc, bad, "not an IDX file", "3c 68 74 6d")


def test_empty_file(tmp_path):
    bad = tmp_path / "empty"
    bad.write_bytes(b"")
    with pytest.raises(DataError) as exc:
        read_idx(bad)
    assert_clear(exc, bad, "not an IDX file", "nothing")


def test_header_cut_short(tmp_path):
    bad = tmp_path / "short-header"
    bad.write_bytes(idx_bytes(np.zeros((2, 3, 4), np.uint8))[:9])
    with pytest.raises(DataError) as exc:
        read_idx(bad)
    assert_clear(exc, bad, "header needs 16 bytes", "truncated")


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read it"):
        read_idx(tmp_path / "nope.gz")


def test_multi_member_gzip(tmp_path):
    data = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    f = tmp_path / "two-members.gz"
    f.write_bytes(gzip.compress(data[:10]) + gzip.compress(data[10:]))
    assert read_idx(f).tolist() == np.arange(24).reshape(2, 3, 4).tolist()


arrays = st.sampled_from(list(TYPE_CODES)).flatmap(
    lambda t: st.lists(st.integers(0, 4), min_size=1, max_size=3).flatmap(
        lambda shape: st.lists(st.integers(-100, 100), min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))
        .map(lambda xs: np.array(xs).astype(t).reshape(shape))
    )
)


@settings(max_examples=60, deadline=None)
@given(array=arrays, compress=st.booleans())
def test_round_trip_every_type_code_native_order(tmp_path_factory, array, compress):
    data = idx_bytes(array)
    f = tmp_path_factory.mktemp("rt") / "a"
    f.write_bytes(gzip.compress(data) if compress else data)
    back = read_idx(f)
    assert back.dtype == array.dtype and back.dtype.isnative
    assert back.shape == array.shape
    assert np.array_equal(back, array)


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(0, 4 + 3 * 4 + 2 * 3 * 4 * 4 - 1), compress=st.booleans())
def test_any_truncation_is_a_data_error(tmp_path_factory, cut, compress):
    data = idx_bytes(np.arange(24, dtype=np.int32).reshape(2, 3, 4))
    blob = gzip.compress(data)[: max(2, len(gzip.compress(data)) * cut // len(data))] if compress else data[:cut]
    f = tmp_path_factory.mktemp("cut") / "a"
    f.write_bytes(blob)
    with pytest.raises(DataError) as exc:
        read_idx(f)
    assert str(f) in str(exc.value)
