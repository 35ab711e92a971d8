"""What people stumbled on (issue 30, points 3, 4, 7, 8, 10): each refusal fits what was asked, and
the default checkpoint and evaluate_checkpoint are what the docs say."""
import re

import pytest

import engine.data.datasets
from engine import training

from conftest import MNIST, ROOT, TINY_RUN, load_train_script, needs_mnist, refused_run

SCRIPT = ROOT / "scripts" / "train.py"
TINY = TINY_RUN + ["--epochs", "1"]


@pytest.fixture(scope="module")
def cli():
    return load_train_script("train_script_stumbles")


def refused(cli, capsys, args):
    out, err = refused_run(cli, capsys, args)
    return out, err


def test_eval_only_on_a_missing_checkpoint_says_it_does_not_exist_and_how_to_make_one(cli, tmp_path, capsys):
    path = tmp_path / "never.npz"
    _, err = refused(cli, capsys, ["--eval-only", "--checkpoint", str(path)])
    assert "does not exist" in err and f"--checkpoint {path}" in err and "--resume" not in err


def test_the_default_checkpoint_is_named_after_the_specs_network(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.time, "strftime", lambda fmt: "20261207-103347")
    assert cli.default_checkpoint(cli.parser().parse_args([])) == "runs/seven-layer-20261207-103347.npz"


def test_help_and_docs_name_the_default_checkpoint_alike(cli):
    help_text = " ".join(cli.parser().format_help().split())
    docs = " ".join((ROOT / "docs" / "training.md").read_text().split())
    assert "runs/<network>-<date>-<time>.npz" in help_text and "`runs/<network>-<date>-<time>.npz`" in docs


@needs_mnist
def test_evaluate_checkpoint_returns_the_evaluation(tmp_path):
    path = tmp_path / "c.npz"
    settings = {"network": "softmax-regression", "dataset": "mnist", "holdout": 500, "limit": 64, "test_limit": 64,
                "epochs": 1}
    options = dict(spec=ROOT / "layers.yaml", data_dir=MNIST, progress=False)
    done = training.train(training.Options(settings=settings, checkpoint=path, **options), log=lambda line: None)
    ev = training.evaluate_checkpoint(training.Options(checkpoint=path, **options), log=lambda line: None)
    assert isinstance(ev, training.Evaluation) and ev.count == 64 and ev.confusion.shape == (10, 10)
    assert (ev.accuracy, ev.loss) == (done.outcome.evaluation.accuracy, done.outcome.evaluation.loss)


def test_a_bad_optimize_is_refused_before_any_data_is_looked_for(cli, tmp_path, capsys):
    out, err = refused(cli, capsys, [*TINY, "--no-checkpoint", "--data-dir", str(tmp_path), "--optimize", "bogus"])
    assert out == "" and "path optimizer 'bogus' not found" in err


@needs_mnist
def test_missing_mnist_is_one_short_line_naming_the_shared_test_split(cli, tmp_path, capsys, monkeypatch):
    shared = tmp_path / "shared" / "datasets"
    (shared / "mnist").mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (shared / "mnist" / name).symlink_to(MNIST / name)
    monkeypatch.setattr(engine.data.datasets, "SHARED_DIR", shared)
    monkeypatch.setattr(engine.data.datasets, "SYSTEM_DIRS", ())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("EINSUM_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path / "shared")
    _, err = refused(cli, capsys, ["--dataset", "mnist", "--no-download", "--no-checkpoint"])
    assert len(err) < 260, err
    assert re.search(r"mnist train split not found in \S*cache/einsum-engine/mnist", err)
    assert "--data-dir DIR, drop --no-download" in err
    assert "--dataset mnist --data-dir datasets/mnist --holdout 2000" in err


def test_missing_fashion_mnist_is_one_short_line_advising_apt_and_no_shared_copy(cli, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(engine.data.datasets, "SHARED_DIR", tmp_path / "nothing")
    monkeypatch.setattr(engine.data.datasets, "SYSTEM_DIRS", ())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("EINSUM_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    _, err = refused(cli, capsys, ["--dataset", "fashion-mnist", "--no-download", "--no-checkpoint"])
    assert len(err) < 260 and "apt-get install dataset-fashion-mnist, give --data-dir DIR" in err
    assert "shared" not in err and "--holdout" not in err
