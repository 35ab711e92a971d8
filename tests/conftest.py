"""Shared fixtures: where the repository's spec and the shared MNIST test files are."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "layers.yaml"
MNIST = ROOT.parent / "shared" / "datasets" / "mnist"


@pytest.fixture(scope="session")
def mnist_test():
    """The real MNIST test set (10k digits), scaled to [0, 1] as (N, 28, 28, 1)."""
    from engine import datasets
    data = datasets.load("mnist", "test", data_dir=MNIST, download=False)
    return (data.images.reshape(-1, 28, 28, 1) / 255.0), data.labels.astype(int)
