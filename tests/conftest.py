"""Shared fixtures: where the repository's spec and the shared MNIST test files are."""
import atexit
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Collected by a Python without the project's dependencies (a system python3 before set-up), the
# suite says so in one line instead of one ModuleNotFoundError per test module
MISSING = [m for m in ("numpy", "opt_einsum", "yaml", "hypothesis") if importlib.util.find_spec(m) is None]


def pytest_configure(config):
    if not MISSING:
        return
    venv = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "python"
    if venv.is_file() and "NOTATION_TESTS_REEXEC" not in os.environ:
        # set up already: the same run, in the project's Python (python3 -m pytest then just works)
        os.environ["NOTATION_TESTS_REEXEC"] = "1"
        sys.stdout.flush()
        os.execv(str(venv), [str(venv), "-m", "pytest", *config.invocation_params.args])
    raise pytest.UsageError(
            f"{sys.executable} lacks the project's dependencies ({', '.join(MISSING)}); run `bash scripts/setup.sh`, "
            "then the tests with `.venv/bin/python -m pytest -q` (the README's command)")


if not MISSING:
    from hypothesis import settings
    from hypothesis.configuration import set_hypothesis_home_dir

    # hypothesis keeps nothing in the working tree (no example database, its caches in a temporary
    # folder): a test run leaves the clone as it found it
    settings.register_profile("no-database", database=None)
    settings.load_profile("no-database")
    _HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="hypothesis-")
    set_hypothesis_home_dir(_HYPOTHESIS_HOME)
    atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, ignore_errors=True)

# The cost model's fixed reference rates (notation/lowering/cost.py): a test's roads never depend on the machine
# that runs it, and no test measures the machine or writes its cache (subprocesses inherit this)
os.environ["NOTATION_RATES"] = "reference"

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "layers.yaml"
MNIST = ROOT.parent / "shared" / "datasets" / "mnist"  # CI places ../shared beside the clone
HAVE_MNIST = (MNIST / "t10k-images-idx3-ubyte.gz").is_file() and (MNIST / "t10k-labels-idx1-ubyte.gz").is_file()
needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason=f"the real MNIST test set is not at {MNIST} "
                                                        "(CI places ../shared beside the clone)")


@pytest.fixture(scope="session")
def mnist_test():
    """The real MNIST test set (10k digits), scaled to [0, 1] as (N, 28, 28, 1)."""
    if not HAVE_MNIST:
        pytest.skip(f"the real MNIST test set is not at {MNIST} (CI places ../shared beside the clone)")
    from engine.data import datasets
    data = datasets.load("mnist", "test", data_dir=MNIST, download=False)
    return (data.images.reshape(-1, 28, 28, 1) / 255.0), data.labels.astype(int)


def spec_with(**algorithms):
    """layers.yaml's text with the named layers on the given algorithms: spec_with(conv2="fourier")."""
    import re
    text = SPEC.read_text()
    for layer, algorithm in algorithms.items():
        text, n = re.subn(rf"(\{{name: {layer}, kind: conv2d, [^}}]*algorithm: )\w+", rf"\g<1>{algorithm}", text)
        assert n == 1, f"layer {layer} with an algorithm: field not found in layers.yaml"
    return text


def spec_error(tmp_path, data, network=None) -> str:
    """The one-line SpecError a spec (a dict) gets when loaded from a file: it names that file."""
    import yaml

    import engine
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(engine.SpecError) as info:
        engine.load(path, network=network)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def train_steps(net, images, labels, steps, batch, lr):
    """Adam on consecutive batches from the start of the data; the loss of every step."""
    from engine.training.optim import make
    opt = make("adam", net.params, lr)
    losses = []
    for step in range(steps):
        sl = slice(batch * step, batch * (step + 1))
        loss, grads = net.loss_and_grads(images[sl], labels[sl], copy=False)
        opt.step(net.params, grads)
        losses.append(loss)
    return losses


_STARTED = []  # processes a test started and left to run (started()): none outlives its test


def started(proc: subprocess.Popen) -> subprocess.Popen:
    """proc, killed at the end of the test that started it if it still runs then (a test that failed
    while waiting for a training of 100,000 epochs must not leave it running)."""
    _STARTED.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def run_script(name, *args, cwd=ROOT, ok=True, timeout=120):
    """scripts/<name> run as a user runs it, in a fresh interpreter; a zero exit asserted unless ok=False."""
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / name), *map(str, args)], capture_output=True,
                         text=True, cwd=cwd, timeout=timeout)
    if ok:
        assert out.returncode == 0, out.stderr
    return out


TRAIN_SCRIPT = ROOT / "scripts" / "train.py"
# a run of seconds: softmax regression on 64 examples of the shared MNIST test split
TINY_RUN = ["--network", "softmax-regression", "--dataset", "mnist", "--data-dir", str(MNIST), "--holdout", "500",
            "--limit", "64", "--test-limit", "64", "--no-progress"]


def load_train_script(name="train_script"):
    """scripts/train.py as a module, so that a test calls its main() in process."""
    spec = importlib.util.spec_from_file_location(name, TRAIN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def refused_run(cli, capsys, args) -> tuple:
    """stdout and the one line on stderr of a train.py run refused with exit code 2."""
    code = cli.main(args)
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return out, err


def rewrite_checkpoint(path, meta=None, arrays=None):
    """The checkpoint with its meta record or arrays changed, as a hostile editor would."""
    import json

    import numpy as np
    with np.load(path, allow_pickle=False) as z:
        content = {k: z[k] for k in z.files}
    record = json.loads(str(content["meta"]))
    if meta:
        meta(record)
    if arrays:
        arrays(content)
    content["meta"] = np.array(json.dumps(record))
    with open(path, "wb") as f:
        np.savez(f, **content)


def needs_the_library():
    """Skip where notation/runtime/fused.c is not built (or turned off): the fused loops' own tests."""
    from notation.runtime import fused
    if fused.describe().startswith("numpy passes"):
        pytest.skip(f"Adam's fused update: {fused.describe()}")


@pytest.fixture(params=["numpy passes", "one pass (fused.c)"])
def update(request, monkeypatch):
    """Every rule holds whether Adam's blocks take numpy's passes or the fused loop."""
    monkeypatch.setenv("NOTATION_FUSED", "0" if request.param == "numpy passes" else "1")
    if request.param != "numpy passes":
        needs_the_library()
    return request.param
