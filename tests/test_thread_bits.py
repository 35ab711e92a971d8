"""The bits of training never depend on the number of threads: a sum cut in parts is cut the same way
on one thread, two, or BLAS's own (notation/runtime/parallel.py), so a run resumes exactly under any of them."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import MNIST, ROOT, needs_mnist

STEPS = """
import hashlib, sys
import numpy as np
import engine
from engine.training.optim import make
net = engine.load(sys.argv[1], network=sys.argv[2], seed=0)
batch, steps = int(sys.argv[3]), 2
rng = np.random.default_rng(0)
x = rng.random((batch * steps,) + tuple(net.input_shape)).astype(net.dtype)
y = rng.integers(0, net.classes, batch * steps)
opt = make("adam", net.params, 1e-3)
for s in range(steps):
    loss, grads = net.loss_and_grads(x[batch * s:batch * (s + 1)], y[batch * s:batch * (s + 1)], copy=False)
    opt.step(net.params, grads)
for layer, ps in sorted(net.params.items()):
    for p, v in sorted(ps.items()):
        print(layer, p, hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest())
"""


def weights_after_steps(env, network, batch):
    """{layer param: sha256} after two Adam steps in a fresh process with `env` set."""
    out = subprocess.run([sys.executable, "-c", STEPS, str(ROOT / "layers.yaml"), network, str(batch)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "NOTATION_PARALLEL": "1", **env})
    assert out.returncode == 0, out.stderr
    return dict(line.rsplit(" ", 1) for line in out.stdout.splitlines())


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two threads need two cores")
@pytest.mark.parametrize("network, batch", [("seven-layer", 64), ("zoo", 32), ("vit", 32)])
def test_two_threads_one_thread_and_blas_threads_train_to_the_same_bits(network, batch):
    two = weights_after_steps({"NOTATION_THREADS": "2"}, network, batch)
    assert two == weights_after_steps({"NOTATION_THREADS": "1"}, network, batch)
    assert two == weights_after_steps({"NOTATION_PARALLEL": "0"}, network, batch)


def test_a_thin_product_sums_in_the_same_parts_with_one_worker_or_two(monkeypatch):
    from notation.runtime import parallel

    rng = np.random.default_rng(1)
    a, b = rng.random((25, 50176), np.float32), rng.random((50176, 32), np.float32)
    monkeypatch.setattr(parallel, "WORKERS", 2)
    two = parallel.matmul(a, b)
    monkeypatch.setattr(parallel, "WORKERS", 1)
    assert np.array_equal(parallel.matmul(a, b), two)
    monkeypatch.setattr(parallel, "_ENABLED", False)
    assert np.array_equal(parallel.matmul(a, b), two)


def train(tmp_path, env, *args):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "--network", "seven-layer", "--dataset",
                          "mnist", "--data-dir", str(MNIST), "--holdout", "500", "--limit", "64", "--test-limit", "32",
                          "--batch-size", "32", "--no-progress", "--schedule", "constant", *map(str, args)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    return out


def weights(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k.startswith(("params/", "optim/"))}


@needs_mnist
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two threads need two cores")
def test_a_run_interrupted_on_two_threads_resumes_on_one_to_the_same_bits(tmp_path):
    whole, part = tmp_path / "whole.npz", tmp_path / "part.npz"
    train(tmp_path, {"NOTATION_THREADS": "1"}, "--epochs", 2, "--checkpoint", whole)
    train(tmp_path, {"NOTATION_THREADS": "2"}, "--epochs", 1, "--checkpoint", part)
    resumed = train(tmp_path, {"NOTATION_THREADS": "1"}, "--epochs", 2, "--checkpoint", part, "--resume")
    assert "note:" not in resumed.stderr  # nothing the bits depend on changed
    a, b = weights(whole), weights(part)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@needs_mnist
def test_a_run_on_our_threads_resumes_on_openblas_threads_to_the_same_bits(tmp_path):
    from notation.runtime import parallel

    if "openblas" not in parallel.arithmetic():
        pytest.skip("another BLAS: its threads may sum in other orders")
    whole, part = tmp_path / "whole.npz", tmp_path / "part.npz"
    train(tmp_path, {"NOTATION_PARALLEL": "1"}, "--epochs", 2, "--checkpoint", whole)
    train(tmp_path, {"NOTATION_PARALLEL": "1"}, "--epochs", 1, "--checkpoint", part)
    resumed = train(tmp_path, {"NOTATION_PARALLEL": "0"}, "--epochs", 2, "--checkpoint", part, "--resume")
    assert "note:" not in resumed.stderr
    a, b = weights(whole), weights(part)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
