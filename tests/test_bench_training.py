"""scripts/bench_training.py: a whole training run of a network's PyTorch twin, epoch by epoch (speed is
its output, never asserted); bad flags are one line."""
import importlib.util
from pathlib import Path

import pytest

from conftest import run_script

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed")
needs_fashion = pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file(),
                                   reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")


@pytest.mark.parametrize("flag", ["--epochs", "--limit", "--threads"])
def test_a_count_below_one_is_one_line(flag):
    err = run_script("bench_training.py", flag, "0", ok=False).stderr
    assert err == f"bench_training.py: {flag} 0: give 1 or more (see --help)\n"


@needs_torch
@needs_fashion
def test_the_twin_trains_and_reports_each_epoch():
    out = run_script("bench_training.py", "--network", "softmax-regression", "--limit", "128", "--epochs", "2").stdout
    lines = out.splitlines()
    assert lines[0].startswith("softmax-regression: PyTorch ") and "Adam lr 0.001, batch 64, 2 epochs" in lines[0]
    assert [line.split(":")[0] for line in lines[1:3]] == ["epoch 1/2", "epoch 2/2"]
    assert "test accuracy" in lines[2] and lines[3].startswith("done: ")
