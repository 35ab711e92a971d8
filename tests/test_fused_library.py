"""notation/runtime/_fused.so is mapped only when it is the whole file scripts/setup.sh built: a truncated,
overwritten or foreign library (which ctypes would map, then die of SIGBUS on) is one line on
stderr, and numpy's passes run to the same bits.  Each case runs in a fresh process."""
import shutil
import subprocess
import sys

import numpy as np
import pytest

from notation.runtime import fused

from conftest import ROOT

# in a fresh process: the library and stamp given, one Adam step and a network's loss and gradients
RUN = """
import sys
from pathlib import Path
import numpy as np
from notation.runtime import fused
fused.LIBRARY, fused.STAMP = Path(sys.argv[1]), Path(sys.argv[2])
import engine
w, g = np.linspace(-1, 1, 1000, dtype=np.float32), np.linspace(1, 2, 1000, dtype=np.float32)
m, v = np.zeros_like(w), np.zeros_like(w)
from engine.training.optim import make
make("adam", {"l": {"w": w}}, 0.01).step({"l": {"w": w}}, {"l": {"w": g}})
net = engine.load(sys.argv[3], network="zoo", seed=0)
x = np.random.default_rng(0).random((64,) + tuple(net.input_shape)).astype(net.dtype)
loss, grads = net.loss_and_grads(x, np.arange(64) % 10, copy=False)
print(fused.describe())
print(float(loss), w.tobytes().hex()[:64])
"""
needs_library = pytest.mark.skipif(not (fused.LIBRARY.is_file() and fused.STAMP.is_file()),
                                   reason="notation/runtime/_fused.so is not built here (scripts/setup.sh)")


def run_with(library, stamp, fused_flag="1"):
    import os
    return subprocess.run([sys.executable, "-c", RUN, str(library), str(stamp), str(ROOT / "layers.yaml")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "NOTATION_FUSED": fused_flag})


@pytest.fixture(scope="module")
def numpy_passes(tmp_path_factory):
    """What the run prints on numpy's passes (NOTATION_FUSED=0): the same bits any refusal must give."""
    out = run_with(fused.LIBRARY, fused.STAMP, "0")
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()[1]


@needs_library
@pytest.mark.parametrize("size", [1000, 4096, 12000, 24576, -1])
def test_a_truncated_library_is_refused_in_one_line_and_numpy_runs(tmp_path, numpy_passes, size):
    library = tmp_path / "_fused.so"
    library.write_bytes(fused.LIBRARY.read_bytes()[:size])
    out = run_with(library, fused.STAMP)
    assert out.returncode == 0, out.stderr  # not SIGBUS
    assert out.stderr.count("\n") == 1 and "SHA-256 is not the one in _fused.so.sha256" in out.stderr
    assert "run scripts/setup.sh again" in out.stderr
    assert out.stdout.splitlines()[1] == numpy_passes


@needs_library
def test_a_library_without_its_stamp_is_an_unfinished_build(tmp_path, numpy_passes):
    library = tmp_path / "_fused.so"
    shutil.copy(fused.LIBRARY, library)
    out = run_with(library, tmp_path / "_fused.so.sha256")
    assert out.returncode == 0 and out.stderr.count("\n") == 1 and "unfinished build" in out.stderr, out.stderr
    assert out.stdout.splitlines()[1] == numpy_passes


@needs_library
@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_a_stamped_library_missing_functions_is_one_line_and_numpy_runs(tmp_path, numpy_passes):
    import hashlib
    source = tmp_path / "short.c"
    source.write_text(f"unsigned long long fused_source(void) {{ return {fused.source_hash()}ULL; }}\n")
    library = tmp_path / "_fused.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    stamp = tmp_path / "_fused.so.sha256"
    stamp.write_text(hashlib.sha256(library.read_bytes()).hexdigest() + "\n")
    out = run_with(library, stamp)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and "adam_float32" in out.stderr
    assert out.stdout.splitlines()[1] == numpy_passes


def test_a_foreign_file_with_a_stamp_of_another_is_refused(monkeypatch, tmp_path):
    foreign = tmp_path / "_fused.so"
    foreign.write_bytes(np.arange(1000, dtype=np.int64).tobytes())
    stamp = tmp_path / "_fused.so.sha256"
    stamp.write_text("0" * 64 + "\n")
    monkeypatch.setattr(fused, "LIBRARY", foreign)
    monkeypatch.setattr(fused, "STAMP", stamp)
    monkeypatch.setattr(fused, "_state", {"lib": None, "why": None})
    assert "SHA-256 is not the one in _fused.so.sha256" in fused.describe()
