"""Training a network with batch normalisation and dropout: running statistics and the dropout
generator are saved in the checkpoint, so a resumed run takes exactly the steps an uninterrupted
one would, even when Ctrl-C lands halfway through a step; evaluation uses the running statistics."""
import re

import numpy as np
import pytest

import engine
from engine.training import Config, Data, Trainer, checkpoint, evaluate

from conftest import MNIST, ROOT, SPEC, needs_mnist

SPEC_BYTES = SPEC.read_bytes()
NETWORK = "seven-layer-bn"


@pytest.fixture(scope="module")
def fresh():
    net = engine.load(SPEC, network=NETWORK)

    def get():
        net.set_params(net.init(0))
        net.set_state(net.init_state())
        return net
    return get


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    images = (rng.random((48, 28, 28, 1)) * 255).astype(np.uint8)
    labels = rng.integers(0, 10, 48)
    return Data(images[:32], labels[:32], images[32:], labels[32:], "synthetic")


def config(**kw):
    return Config(**{"network": NETWORK, "dataset": "fashion-mnist", "optimizer": "adam", "lr": 1e-3,
                     "batch_size": 16, "epochs": 2, "seed": 0, **kw})


def trainer(net, data, path=None, settings=None, **kw):
    return Trainer(net, data, config(**(settings or {})), spec_hash=checkpoint.spec_hash(SPEC_BYTES, NETWORK),
                   spec_file=str(SPEC), checkpoint=path, progress=False, log=lambda *a: None, **kw)


def everything(net):
    """Parameters and running statistics, copied."""
    out = {("p", l, p): v.copy() for l, ps in net.params.items() for p, v in ps.items()}
    out.update({("s", l, n): v.copy() for l, ns in net.state.items() for n, v in ns.items()})
    return out


def same_bits(a, b):
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def uninterrupted(fresh, data):
    t = trainer(fresh(), data)
    assert t.run().status == "finished" and t.step == 4
    return everything(t.net), evaluate(t.net, data.test_x, data.test_y, 16)


def test_the_checkpoint_holds_the_running_statistics(fresh, data, tmp_path):
    path = tmp_path / "run.npz"
    t = trainer(fresh(), data, path)
    t.run()
    saved = checkpoint.load(path)
    assert set(saved.state) == {"bn1", "bn2"} and set(saved.state["bn1"]) == {"rm", "rv"}
    assert np.array_equal(saved.state["bn2"]["rv"], t.net.state["bn2"]["rv"])
    assert not np.array_equal(saved.state["bn2"]["rv"], np.ones(64))  # they moved in training
    assert "mask_rng_state" in saved.meta


def test_interrupted_between_steps_then_resumed_equals_the_uninterrupted_run_bit_for_bit(fresh, data, tmp_path,
                                                                                         uninterrupted):
    path = tmp_path / "run.npz"

    def stop(t):
        if t.step == 3:
            raise KeyboardInterrupt
    assert trainer(fresh(), data, path, on_step=stop).run().status == "interrupted"
    resumed = trainer(fresh(), data, path)
    resumed.restore(checkpoint.load(path), path)
    assert resumed.run().status == "finished"
    assert same_bits(everything(resumed.net), uninterrupted[0])
    ev = evaluate(resumed.net, data.test_x, data.test_y, 16)
    assert ev.loss == uninterrupted[1].loss


def test_ctrl_c_halfway_through_a_step_puts_the_statistics_and_generator_back(fresh, data, tmp_path, uninterrupted):
    path = tmp_path / "run.npz"
    t = trainer(fresh(), data, path)
    step = t.net.loss_and_grads

    def interrupted_after_the_forward(x, labels, copy=True):
        out = step(x, labels, copy=copy)  # running statistics updated, a mask drawn
        if t.step == 2:
            raise KeyboardInterrupt
        return out
    t.net.loss_and_grads = interrupted_after_the_forward
    try:
        assert t.run().status == "interrupted"
    finally:
        del t.net.loss_and_grads
    assert checkpoint.load(path).meta["step"] == 2
    resumed = trainer(fresh(), data, path)
    resumed.restore(checkpoint.load(path), path)
    resumed.run()
    assert same_bits(everything(resumed.net), uninterrupted[0])


@needs_mnist
def test_eval_only_restores_the_running_statistics_and_gives_the_runs_accuracy(tmp_path, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location("train_script", ROOT / "scripts" / "train.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    ck = tmp_path / "bn.npz"
    args = ["--network", NETWORK, "--dataset", "mnist", "--data-dir", str(MNIST), "--holdout", "9900",
            "--test-limit", "64", "--limit", "64", "--batch-size", "32", "--epochs", "1", "--no-progress",
            "--checkpoint", str(ck)]
    assert cli.main(args) == 0
    trained = re.search(r"done: test accuracy ([\d.]+%)", capsys.readouterr().out).group(1)
    assert cli.main(["--eval-only", "--checkpoint", str(ck), "--data-dir", str(MNIST)]) == 0
    assert f"test accuracy {trained}" in capsys.readouterr().out


@pytest.mark.parametrize("settings, stop_at", [
    ({"schedule": "cosine", "augment": "flip,shift"}, 3),
    ({"augment": "shift1,erase"}, 3),
    ({"schedule": "cosine", "warmup": 1, "weight_decay": 0.05}, 1),  # stopped inside the warm-up
], ids=["cosine with augmented images", "one-pixel shifts and erased rectangles", "warm-up with weight decay"])
def test_a_scheduled_run_resumes_bit_for_bit(fresh, data, tmp_path, settings, stop_at):
    t = trainer(fresh(), data, settings=settings)
    assert t.run().status == "finished"
    whole = everything(t.net)
    path = tmp_path / "run.npz"

    def stop(t):
        if t.step == stop_at:
            raise KeyboardInterrupt
    assert trainer(fresh(), data, path, settings, on_step=stop).run().status == "interrupted"
    resumed = trainer(fresh(), data, path, settings)
    resumed.restore(checkpoint.load(path), path)
    assert resumed.run().status == "finished"
    assert same_bits(everything(resumed.net), whole)


def test_schedule_augmentation_warm_up_and_weight_decay_change_the_run(fresh, data, uninterrupted):
    for settings in ({"schedule": "cosine"}, {"augment": "flip"}, {"augment": "shift1"}, {"augment": "erase"},
                     {"warmup": 1}, {"weight_decay": 0.05}):
        t = trainer(fresh(), data, settings=settings)
        t.run()
        assert not same_bits(everything(t.net), uninterrupted[0]), settings
