"""A resumed run goes on where its bits may no longer be the run's own, but says so in one line: trained
on another BLAS or rates (`arithmetic`), or with some products on other roads (`roads`, a digest of
every product's road in a training step)."""
import numpy as np

from engine import training
from engine.training import Data, checkpoint

from conftest import rewrite_checkpoint


def data():
    rng = np.random.default_rng(0)
    y, ty = rng.integers(0, 3, 96), rng.integers(0, 3, 30)
    x, tx = (np.eye(3, dtype=np.uint8)[labels][:, None, None, :].repeat(6, 1).repeat(6, 2) * 255
             for labels in (y, ty))
    return Data(x, y, tx, ty, classes=["red", "green", "blue"])


def run(tmp_path, resume=False, epochs=1):
    o = training.Options(settings={"network": "softmax-regression", "epochs": epochs, "lr": 0.05},
                         checkpoint=tmp_path / "run.npz", resume=resume, progress=False)
    return training.train(o, log=lambda line: None, data=data())


def notes(capsys) -> list:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]


def test_the_checkpoint_records_the_roads_of_a_training_step(tmp_path):
    run(tmp_path)
    roads = checkpoint.load(tmp_path / "run.npz").meta["roads"]
    assert isinstance(roads, str) and len(roads) == 16


def test_a_resume_on_the_same_roads_and_arithmetic_says_nothing(tmp_path, capsys):
    run(tmp_path)
    capsys.readouterr()
    assert run(tmp_path, resume=True, epochs=2).trainer.epoch == 2
    assert notes(capsys) == []


def test_a_resume_with_products_on_other_roads_says_its_bits_may_differ(tmp_path, capsys):
    run(tmp_path)
    rewrite_checkpoint(tmp_path / "run.npz", meta=lambda m: m.update(roads="0" * 16))
    capsys.readouterr()
    assert run(tmp_path, resume=True, epochs=2).trainer.epoch == 2
    (line,) = notes(capsys)
    assert "run.npz was trained with some products on other roads" in line and "last bits" in line


def test_a_resume_on_other_arithmetic_says_so_once(tmp_path, capsys):
    run(tmp_path)
    rewrite_checkpoint(tmp_path / "run.npz", meta=lambda m: m.update(arithmetic="another BLAS", roads="0" * 16))
    capsys.readouterr()
    run(tmp_path, resume=True, epochs=2)
    (line,) = notes(capsys)
    assert "was trained on another BLAS" in line
