"""What comes in is checked where it comes in, and the message names the real cause: a checkpoint's
fields and arrays, pixels handed to the Python API, batch statistics over one value, the environment
variables, a spec too large to be one, a plan's batch, another data set's files."""
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from engine import training
from engine.data import datasets
from engine.errors import DataError
from engine.training import Config, Data, Trainer

from conftest import MNIST, ROOT, SPEC, TINY_RUN, load_train_script, needs_mnist, refused_run, rewrite_checkpoint

SCRIPT = ROOT / "scripts" / "train.py"
TINY = TINY_RUN + ["--batch-size", "32"]


@pytest.fixture(scope="module")
def cli():
    return load_train_script("train_script_checks")


def refused(cli, capsys, args):
    out, err = refused_run(cli, capsys, args)
    return err


rewrite = rewrite_checkpoint


def trained(cli, capsys, tmp_path, *extra):
    path = tmp_path / "c.npz"
    assert cli.main(TINY + ["--epochs", "1", "--checkpoint", str(path), *extra]) == 0, capsys.readouterr().err
    capsys.readouterr()
    return path


def interrupted(cli, capsys, tmp_path, epochs=2):
    """A checkpoint of a run stopped at epoch 2, batch 1 (of 2): a resume point."""
    path = trained(cli, capsys, tmp_path)
    rewrite(path, meta=lambda m: m.update(batch=1, step=3, config={**m["config"], "epochs": epochs}),
            arrays=lambda a: a.update({"data/order": np.random.default_rng([0, 1]).permutation(64)}))
    return path


# -- forged checkpoints ------------------------------------------------------------------------
@needs_mnist
@pytest.mark.parametrize("forge, named", [
    (lambda m: m.update(batch=9, step=11), "its batch 9 lies beyond the epoch's 2 batches"),
    (lambda m: m.update(step=10 ** 18), "its step 1000000000000000000 is not the 3 updates"),
    (lambda m: m.update(history="[1, 2]"), "its history is not a list of 1 epoch records"),
    (lambda m: m.update(epoch=7, step=15), "its epoch 7 lies beyond the 2 epochs"),
    (lambda m: m.update(sums={"loss": float("nan"), "seen": 32, "seconds": 1.0}), "its running sums"),
], ids=["batch beyond the epoch", "step 1e18", "history as text", "epoch beyond the run", "NaN sums"])
def test_a_forged_checkpoint_field_is_refused_by_name(cli, capsys, tmp_path, forge, named):
    path = interrupted(cli, capsys, tmp_path)
    rewrite(path, meta=forge)
    err = refused(cli, capsys, TINY + ["--checkpoint", str(path), "--resume"])
    assert named in err and "damaged or altered" in err


@needs_mnist
@pytest.mark.parametrize("key", ["optim/m/dense.w", "optim/v/dense.b"])
def test_nan_in_the_optimizer_state_is_named_not_called_a_large_lr(cli, capsys, tmp_path, key):
    path = interrupted(cli, capsys, tmp_path)
    rewrite(path, arrays=lambda a: a[key].flat.__setitem__(0, np.nan))
    err = refused(cli, capsys, TINY + ["--checkpoint", str(path), "--resume"])
    assert f"its optimizer state is not finite (NaN or infinite) in {key[6:]}" in err and "--lr" not in err


BN_TINY = [a if a != "softmax-regression" else "seven-layer-bn" for a in TINY]


@needs_mnist
@pytest.mark.parametrize("value, named", [(np.nan, "its running statistics are not finite (NaN or infinite) in "
                                                   "bn1.rv"),
                                          (-1.0, "its running variance bn1.rv is negative")], ids=["NaN", "negative"])
@pytest.mark.parametrize("mode", [["--eval-only"], ["--resume"]], ids=["eval-only", "resume"])
def test_bad_running_variances_in_a_checkpoint_are_named(cli, capsys, tmp_path, value, named, mode):
    path = tmp_path / "c.npz"
    assert cli.main(BN_TINY + ["--epochs", "1", "--checkpoint", str(path)]) == 0
    capsys.readouterr()
    rewrite(path, arrays=lambda a: a["state/bn1/rv"].flat.__setitem__(3, value))
    args = [*BN_TINY[:8], "--checkpoint", str(path), *mode] if mode[0] == "--eval-only" else \
        BN_TINY + ["--checkpoint", str(path), *mode]
    err = refused(cli, capsys, args)
    assert named in err and "loss nan" not in err


# -- what the Python API is handed --------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_pixels_handed_to_the_api_are_named(bad):
    x = np.random.default_rng(0).random((8, 28, 28, 1)).astype(np.float32)
    x[5, 3, 3, 0] = bad
    with pytest.raises(DataError, match=r"the train_x images hold NaN or infinite values \(1 example, the first at "
                                        r"index 5\)"):
        Data(x, np.arange(8) % 10, x[:4].copy() * 0, np.arange(4))


def pixel_bn_spec(tmp_path):
    """A network whose batch norm sees one position per example: 1 x 1 images of 4 channels."""
    spec = yaml.safe_load(SPEC.read_text())
    spec["networks"] = {"pixel-bn": {"input": [1, 1, 4], "loss": "softmax_cross_entropy", "layers": [
        {"name": "bn", "kind": "batchnorm"}, {"name": "flat", "kind": "flatten"},
        {"name": "out", "kind": "dense", "units": 10, "activation": "softmax"}]}}
    spec["network"] = "pixel-bn"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize("n, batch, said", [(16, 1, "batch_size` 1 gives it 1 value per channel"),
                                            (17, 4, "the last batch of each epoch (17 training examples in batches "
                                                    "of 4 leave 1)")], ids=["batch 1", "a last batch of 1"])
def test_batch_norm_over_one_value_per_channel_is_refused(tmp_path, n, batch, said):
    import engine
    net = engine.load(pixel_bn_spec(tmp_path), network="pixel-bn")
    x = np.random.default_rng(0).random((n, 1, 1, 4)).astype(np.float32)
    data = Data(x, np.arange(n) % 10, x[:4], np.arange(4))
    config = Config(network="pixel-bn", dataset="mnist", optimizer="adam", lr=1e-3, batch_size=batch, epochs=1,
                    seed=0)
    with pytest.raises(training.TrainingError) as info:
        Trainer(net, data, config)
    assert said in str(info.value) and "expected more than 1" in str(info.value)
    Trainer(net, data, dataclasses.replace(config, batch_size=2 if n % 2 == 0 else 3))  # two values: trains


# -- a finished run, another data set's files ---------------------------------------------------------
@needs_mnist
def test_a_finished_cosine_run_does_not_advise_more_epochs(cli, capsys, tmp_path):
    path = trained(cli, capsys, tmp_path, "--schedule", "cosine")
    assert cli.main(TINY + ["--checkpoint", str(path), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "all 1 epoch done" in out and "--epochs" not in out and "cosine schedule" in out


@needs_mnist
def test_intact_mnist_files_in_a_fashion_mnist_folder_are_named_as_mnist(tmp_path):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (folder / f).write_bytes((MNIST / f).read_bytes())
    with pytest.raises(DataError) as info:
        datasets.load("fashion-mnist", "test", data_dir=folder, download=False)
    assert "an intact t10k-" in str(info.value) and "(mnist), not of Fashion-MNIST" in str(info.value)
    assert "damaged" not in str(info.value) and "`dataset` mnist" in str(info.value)


# -- the environment, the spec, the plan's batch -------------------------------------------------------
def script(name, *args, env=None, cwd=ROOT):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / name), *map(str, args)], capture_output=True,
                         text=True, cwd=cwd, timeout=120, env={**os.environ, **(env or {})})
    return out


@pytest.mark.parametrize("variable, value", [
    ("NOTATION_THREADS", "0"), ("NOTATION_THREADS", "-3"), ("NOTATION_THREADS", "two"),
    ("NOTATION_THREADS", "1000"), ("NOTATION_BLAS_THREADS_FLOPS", "lots"), ("NOTATION_PARALLEL", "maybe"),
    ("NOTATION_FUSED", "yes"), ("NOTATION_RATES", "fast"), ("EINSUM_DATA_DIR", str(SPEC)),
])
@pytest.mark.parametrize("name", ["train.py", "plan.py"])
def test_a_bad_environment_variable_is_one_line_naming_it(tmp_path, name, variable, value):
    out = script(name, *(["--no-checkpoint"] if name == "train.py" else []), env={variable: value}, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith(f"{name}: {variable}={value!r}")


@pytest.mark.parametrize("source", ["/dev/zero", "sparse"])
def test_a_spec_too_large_to_be_one_is_refused_after_a_bounded_read(tmp_path, source):
    if source == "sparse":
        source = tmp_path / "huge.yaml"
        with open(source, "wb") as f:
            f.truncate(3 << 30)  # 3 GiB that take no room
    out = script("plan.py", "--spec", source)
    assert out.returncode == 2 and "more than 16 MiB: not a spec" in out.stderr and "Traceback" not in out.stderr


def test_a_plan_for_a_batch_beyond_memory_is_refused_before_compiling():
    out = script("plan.py", "--batch", 1099511627776)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "--batch 1099511627776: compiling 'seven-layer' for 1,099,511,627,776 examples takes about" in out.stderr


@pytest.mark.parametrize("variable, value", [("NOTATION_THREADS", "two"), ("NOTATION_BLAS_THREADS_FLOPS", "lots")])
def test_the_python_api_names_a_bad_environment_variable(monkeypatch, variable, value):
    import engine
    monkeypatch.setenv(variable, value)
    with pytest.raises(engine.UserError, match=f"^{variable}='{value}' is not a whole number"):
        engine.load(SPEC)
