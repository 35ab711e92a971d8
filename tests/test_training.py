"""The trainer: it learns, resumes bit for bit, saves on Ctrl-C, stops on NaN, and says what is wrong in one line."""
import dataclasses
import hashlib
import importlib.util
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

import engine
from engine import training
from engine.training import Config, Data, Trainer, checkpoint
from engine.training.checkpoint import CheckpointError

from conftest import MNIST, ROOT, SPEC, needs_mnist, run_script

SCRIPT = ROOT / "scripts" / "train.py"
FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
                                   reason=f"Fashion-MNIST not installed at {FASHION} "
                                          "(apt-get install dataset-fashion-mnist)")
SPEC_BYTES = SPEC.read_bytes()
SPEC_DEFAULTS = engine.read(SPEC).training


def load_script():
    spec = importlib.util.spec_from_file_location("train_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cli():
    return load_script()


@pytest.fixture(scope="module")
def mnist_split(mnist_test):
    """The real MNIST test set cut in two: 640 to train on, 500 held out."""
    x, y = mnist_test
    train, test = training.holdout_split(x, y, 500)
    return Data(x[train[:640]], y[train[:640]], x[test], y[test], "mnist", "MNIST test split, cut in two")


@pytest.fixture(scope="module")
def nets():
    """One network per name, loaded (and checked) once; runs reset its weights."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = engine.load(SPEC, network=name)
        net = cache[name]
        net.set_params(net.init(0))
        return net
    return get


def config(**kw):
    base = dict(network="softmax-regression", dataset="mnist", optimizer="adam", lr=1e-3, batch_size=32, epochs=2,
                seed=0)
    return Config(**{**base, **kw})


def trainer(nets, data, cfg, path=None, **kw):
    net = nets(cfg.network)
    return Trainer(net, data, cfg, spec_hash=checkpoint.spec_hash(SPEC_BYTES, cfg.network), spec_file=str(SPEC),
                   checkpoint=path, progress=False, log=lambda *a: None, **kw)


def small(data, n=320, tests=100):
    return Data(data.train_x[:n], data.train_y[:n], data.test_x[:tests], data.test_y[:tests], "mnist")


def interrupt_at(step):
    def hook(t):
        if t.step == step:
            raise KeyboardInterrupt
    return hook


def weights(net):
    return {(l, p): v.copy() for l, ps in net.params.items() for p, v in ps.items()}


def same_bits(a, b):
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def untimed(history):
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in history]


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- learning ---------------------------------------------------------------------------------
def test_loss_falls_and_accuracy_beats_chance_by_far_on_real_digits(nets, mnist_split, tmp_path):
    t = trainer(nets, mnist_split, config(epochs=2, lr=1e-2), metrics=tmp_path / "m.jsonl")
    outcome = t.run()
    assert outcome.status == "finished"
    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["event"] == "step"]
    assert len(losses) == 40 and np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert [r["epoch"] for r in records if r["event"] == "epoch"] == [1, 2]
    assert t.history[1]["test_loss"] < t.history[0]["test_loss"]
    assert outcome.evaluation.accuracy > 0.7  # chance is 0.1
    assert outcome.evaluation.confusion.sum() == 500


def test_each_epoch_order_is_a_fixed_shuffle_of_seed_and_epoch():
    a, b = training.epoch_order(0, 1, 100), training.epoch_order(0, 1, 100)
    assert np.array_equal(a[1], b[1]) and sorted(a[1]) == list(range(100))
    assert not np.array_equal(a[1], training.epoch_order(0, 2, 100)[1])
    assert not np.array_equal(a[1], training.epoch_order(1, 1, 100)[1])


# -- checkpoints and resuming -----------------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_n_steps_then_resume_then_m_steps_equals_n_plus_m_steps_bit_for_bit(nets, mnist_split, tmp_path, optimizer):
    data, cfg = small(mnist_split, 300), config(optimizer=optimizer, lr=1e-2)  # 10 batches an epoch, the last of 12
    whole = trainer(nets, data, cfg)
    assert whole.run().status == "finished"
    expected = weights(whole.net)

    path = tmp_path / "run.npz"
    first = trainer(nets, data, cfg, path, on_step=interrupt_at(13))  # mid-way through epoch 2
    outcome = first.run()
    assert outcome.status == "interrupted" and outcome.saved
    saved = checkpoint.load(path)
    assert (saved.meta["epoch"], saved.meta["batch"], saved.meta["step"]) == (1, 3, 13)

    second = trainer(nets, data, cfg, path)
    second.restore(saved, path)
    assert second.run().status == "finished" and second.step == 20
    assert same_bits(weights(second.net), expected)
    assert untimed(second.history) == untimed(whole.history)


def test_a_finished_run_resumed_with_more_epochs_equals_the_longer_run(nets, mnist_split, tmp_path):
    data, path = small(mnist_split), tmp_path / "run.npz"
    longer = trainer(nets, data, config(epochs=3))
    longer.run()
    expected = weights(longer.net)  # the networks are shared: copy before the next run resets them
    trainer(nets, data, config(epochs=1), path).run()
    resumed = trainer(nets, data, config(epochs=3), path)
    resumed.restore(checkpoint.load(path), path)
    assert resumed.run().status == "finished"
    assert same_bits(weights(resumed.net), expected)


def test_the_seven_layer_network_resumes_bit_for_bit_too(nets, mnist_split, tmp_path):
    data, cfg = small(mnist_split, 64, 32), config(network="seven-layer", epochs=2)  # 2 batches an epoch
    whole = trainer(nets, data, cfg)
    whole.run()
    expected = weights(whole.net)
    path = tmp_path / "run.npz"
    trainer(nets, data, cfg, path, on_step=interrupt_at(3)).run()
    resumed = trainer(nets, data, cfg, path)
    resumed.restore(checkpoint.load(path), path)
    resumed.run()
    assert same_bits(weights(resumed.net), expected)


def test_ctrl_c_during_an_update_waits_for_it_then_saves(nets, mnist_split, tmp_path):
    data, cfg = small(mnist_split), config()
    whole = trainer(nets, data, cfg)
    whole.run()
    expected = weights(whole.net)
    path = tmp_path / "run.npz"
    t = trainer(nets, data, cfg, path)
    update = t.opt.step

    def step_with_a_real_sigint(params, grads):
        if t.step == 6:
            os.kill(os.getpid(), signal.SIGINT)  # arrives halfway through this update
        update(params, grads)
    t.opt.step = step_with_a_real_sigint
    outcome = t.run()
    assert outcome.status == "interrupted" and "saved to" in outcome.message
    assert checkpoint.load(path).meta["step"] == 7  # the interrupted update finished first
    resumed = trainer(nets, data, cfg, path)
    resumed.restore(checkpoint.load(path), path)
    resumed.run()
    assert same_bits(weights(resumed.net), expected)


def test_a_checkpoint_is_replaced_atomically_and_holds_everything_to_resume(nets, mnist_split, tmp_path):
    path = tmp_path / "sub" / "run.npz"
    trainer(nets, small(mnist_split), config(epochs=1), path).run()
    assert [p.name for p in path.parent.iterdir()] == ["run.npz"]  # no temp file left behind
    saved = checkpoint.load(path)
    assert set(saved.params["dense"]) == {"w", "b"} and saved.params["dense"]["w"].dtype == np.float32
    assert {"t", "m/dense.w", "v/dense.b"} <= set(saved.optim)
    assert {"spec_hash", "config", "epoch", "batch", "step", "rng_state", "history", "algorithms"} <= set(saved.meta)
    assert saved.meta["algorithms"] == {}  # what `auto` chose, per layer: none here; a resume runs the same
    assert saved.meta["spec_hash"] == checkpoint.spec_hash(SPEC_BYTES, "softmax-regression")


# -- stopping safely ---------------------------------------------------------------------------
@pytest.mark.parametrize("poison_at", [13, 20], ids=["mid-epoch", "last-step-of-an-epoch"])
def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(nets, mnist_split, tmp_path, poison_at):
    path = tmp_path / "run.npz"
    digest = {}

    def poison(t):
        if t.step == 11:  # the first update after the checkpoint of epoch 1
            digest["epoch 1"] = sha(path)
        if t.step == poison_at:
            t.net.params["dense"]["w"][0, 0] = np.nan
    t = trainer(nets, small(mnist_split), config(epochs=3), path, on_step=poison)
    outcome = t.run()
    assert outcome.status == "diverged"
    assert "end of epoch 1 (step 10), untouched" in outcome.message
    assert sha(path) == digest["epoch 1"]
    assert all(np.isfinite(v).all() for ps in checkpoint.load(path).params.values() for v in ps.values())


def test_resuming_under_another_spec_or_network_is_refused(nets, mnist_split, tmp_path):
    path = tmp_path / "run.npz"
    trainer(nets, small(mnist_split), config(epochs=1), path).run()
    t = trainer(nets, small(mnist_split), config(epochs=2))
    t.spec_hash = checkpoint.spec_hash(SPEC_BYTES + b"# edited\n", "softmax-regression")
    with pytest.raises(CheckpointError, match="written for network 'softmax-regression' of spec"):
        t.restore(checkpoint.load(path), path)
    with pytest.raises(CheckpointError, match="not network 'seven-layer'"):
        checkpoint.check_spec(checkpoint.load(path), path, checkpoint.spec_hash(SPEC_BYTES, "seven-layer"),
                              str(SPEC), "seven-layer")


@pytest.mark.parametrize("damage", ["truncated", "text", "npz without meta"])
def test_a_corrupt_checkpoint_is_one_clear_line(nets, mnist_split, tmp_path, damage):
    path = tmp_path / "run.npz"
    trainer(nets, small(mnist_split), config(epochs=1), path).run()
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:3000])
    elif damage == "text":
        path.write_text("not a checkpoint\n")
    else:
        np.savez(path, w=np.ones(3))
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "not a checkpoint" in message


# -- the command line --------------------------------------------------------------------------
@needs_mnist
def test_a_holdout_run_trains_checkpoints_resumes_and_evaluates(cli, tmp_path, capsys):
    ck, metrics = tmp_path / "c.npz", tmp_path / "m.jsonl"
    args = ["--network", "softmax-regression", "--dataset", "mnist", "--data-dir", str(MNIST), "--holdout", "1000",
            "--limit", "320", "--batch-size", "32", "--no-progress", "--checkpoint", str(ck), "--metrics", str(metrics)]
    assert cli.main(args + ["--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "data: MNIST handwritten digits (mnist), its test split alone (10000 examples, from " in out
    assert "train on 320 (--limit), test on 1000" in out and "done: test accuracy" in out
    assert cli.main(args + ["--epochs", "2", "--resume"]) == 0
    assert "resuming from" in capsys.readouterr().out
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in records if r["event"] == "step"] == list(range(1, 21))
    assert [r["epoch"] for r in records if r["event"] == "epoch"] == [1, 2]
    assert cli.main(["--eval-only", "--checkpoint", str(ck), "--data-dir", str(MNIST)]) == 0
    out = capsys.readouterr().out
    assert "confusion matrix (rows: true class, columns: predicted)" in out and "of 1000)" in out


def bad_inputs(tmp):
    edited = tmp / "edited.yaml"
    edited.write_bytes(SPEC_BYTES.replace(b"activation: softmax, init: zeros}", b"activation: softmax, init: he}"))
    broken = tmp / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 cut short")
    (tmp / "empty").mkdir(exist_ok=True)
    return {
        "a flag's value": (["--epochs", "two"], "argument --epochs: invalid int value"),
        "a setting's range": (["--lr", "-1"], "--lr (or training: lr in the spec) must be a positive number"),
        "a missing spec": (["--spec", str(tmp / "nope.yaml")], "no such file"),
        "an unknown network": (["--network", "nope"], "'nope' not found"),
        "mnist with the test split alone": (["--dataset", "mnist", "--data-dir", str(MNIST), "--no-download"],
                                            "mnist: only the test split is here"),
        "resuming nothing": (["--checkpoint", str(tmp / "none.npz"), "--resume"], "no checkpoint there"),
        "a corrupt checkpoint": (["--checkpoint", str(broken), "--resume"], "damaged or not a checkpoint"),
        "another spec": (["--checkpoint", str(tmp / "good.npz"), "--resume", "--spec", str(edited)],
                         "no longer means what it was trained as: layer 'dense' hyper init 'zeros' -> 'he'"),
        "other settings": (["--checkpoint", str(tmp / "good.npz"), "--resume", "--lr", "0.5"],
                           "the checkpoint was trained with --lr 0.001, not 0.5"),
        "overwriting a run": (["--checkpoint", str(tmp / "good.npz")], "pass --resume to continue it"),
        "unknown schedule": (["--schedule", "linear"], "invalid choice: 'linear'"),
        "a data set nowhere, named by its flag": (["--dataset", "mnist", "--data-dir", str(tmp / "empty"),
                                                   "--no-download"], "give --data-dir DIR"),
        "unknown augmentation": (["--augment", "flip,rotate"], "augmentation 'rotate' not found"),
        "a warm-up as long as the run": (["--warmup", "1"], "--warmup 1 must be fewer than --epochs 1"),
        "a negative weight decay": (["--weight-decay", "-0.1"], "--weight-decay (or training: weight_decay in the "
                                                                 "spec) must be 0 or a positive number, got -0.1"),
        "another weight decay on resume": (["--checkpoint", str(tmp / "good.npz"), "--resume", "--weight-decay",
                                            "0.05"], "the checkpoint was trained with --weight-decay 0.0, not 0.05"),
        "another schedule on resume": (["--checkpoint", str(tmp / "good.npz"), "--resume", "--schedule", "cosine"],
                                       "the checkpoint was trained with --schedule constant, not cosine"),
    }


@needs_mnist
def test_bad_input_is_one_line_on_stderr_and_exit_code_2(cli, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs without --checkpoint make their default runs/ folder here
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("EINSUM_DATA_DIR", raising=False)
    monkeypatch.setattr(engine.data.datasets, "SYSTEM_DIRS", ())
    common = ["--network", "softmax-regression", "--dataset", "mnist", "--data-dir", str(MNIST), "--holdout", "500",
              "--limit", "64", "--test-limit", "64", "--epochs", "1", "--no-progress"]
    assert cli.main(common + ["--checkpoint", str(tmp_path / "good.npz")]) == 0
    capsys.readouterr()
    for name, (args, expected) in bad_inputs(tmp_path).items():
        if "--dataset" not in args:
            args = common + args
        code = exit_code(cli, args)
        err = capsys.readouterr().err
        assert code == 2, name
        assert err.count("\n") == 1 and expected in err and "Traceback" not in err, (name, err)


def exit_code(cli, args):
    try:
        return cli.main(args)
    except SystemExit as exit_:  # argparse's own exit, with our one-line message
        return exit_.code


def test_a_notation_error_is_one_line_too(cli, capsys, monkeypatch):
    from notation import NotationError

    def fail(*a, **kw):
        raise NotationError("the window does not fit", "z[b,i] = x[b, i+p]", hint="use a smaller kernel")
    monkeypatch.setattr(training.run, "read_spec", fail)
    assert cli.main(["--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == "train.py: the window does not fit; use a smaller kernel (in: z[b,i] = x[b, i+p])\n"


@needs_mnist
def test_a_plot_without_matplotlib_says_how_to_get_it_and_trains_on(cli, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # its default checkpoint lands under tmp_path/runs
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    args = ["--network", "softmax-regression", "--dataset", "mnist", "--data-dir", str(MNIST), "--holdout", "500",
            "--limit", "64", "--epochs", "1", "--no-progress", "--plot", str(tmp_path / "p.png")]
    assert cli.main(args) == 0
    captured = capsys.readouterr()
    assert "pip install -e '.[plot]'" in captured.err and "done: test accuracy" in captured.out
    assert not (tmp_path / "p.png").exists()


def test_the_plot_is_written_when_matplotlib_is_installed(cli, tmp_path):
    pytest.importorskip("matplotlib")
    history = [{"epoch": e, "train_loss": 1 / e, "test_loss": 1.1 / e, "test_accuracy": 0.8 + e / 100} for e in (1, 2)]
    cli.plot_history(history, tmp_path / "p.png", "test")
    assert (tmp_path / "p.png").stat().st_size > 1000


@needs_fashion
def test_the_script_runs_end_to_end_as_a_subprocess_and_prints_its_data_set(tmp_path):
    ck = tmp_path / "c.npz"
    run = run_script("train.py", "--dataset", "fashion-mnist", "--limit", "64", "--epochs", "1", "--batch-size", "32",
                     "--test-limit", "64", "--checkpoint", ck, cwd=tmp_path)
    assert "train on 64 of 60000 (--limit), test on 64 of 10000 (--test-limit); both from" in run.stdout
    assert "network: seven-layer of" in run.stdout and "done: test accuracy" in run.stdout
    assert "epoch 1/1" in run.stderr  # the progress bar
    assert checkpoint.load(ck).meta["step"] == 2


@needs_fashion
def test_a_run_without_checkpoint_flag_still_keeps_one_under_runs(tmp_path):
    run = run_script("train.py", "--network", "softmax-regression", "--limit", "64", "--epochs", "1",
                     "--test-limit", "64", "--no-progress", cwd=tmp_path)
    kept = list((tmp_path / "runs").glob("softmax-regression-*.npz"))
    assert len(kept) == 1 and f"checkpoint: runs/{kept[0].name}" in run.stdout
    assert checkpoint.load(kept[0]).meta["step"] == 1


def test_a_cosine_run_cannot_change_its_epochs_on_resume_but_a_constant_one_can():
    saved = dataclasses.asdict(training.make_config(SPEC_DEFAULTS, "seven-layer", {"schedule": "cosine", "epochs": 2}))
    with pytest.raises(training.TrainingError, match="cosine schedule is planned over its 2 epochs"):
        training.make_config({}, "seven-layer", {"epochs": 4}, saved)
    saved["schedule"] = "constant"
    assert training.make_config({}, "seven-layer", {"epochs": 4}, saved).epochs == 4


def test_a_checkpoint_from_before_warm_up_and_weight_decay_resumes_without_them():
    saved = dataclasses.asdict(training.make_config(SPEC_DEFAULTS, "seven-layer", {}))
    del saved["warmup"], saved["weight_decay"]
    config = training.make_config({}, "seven-layer", {}, saved)
    assert (config.warmup, config.weight_decay) == (0, 0.0)


def test_a_checkpoint_from_before_schedules_resumes_as_constant_without_augmentation():
    saved = dataclasses.asdict(training.make_config(SPEC_DEFAULTS, "seven-layer", {}))
    del saved["schedule"], saved["augment"]
    config = training.make_config({}, "seven-layer", {}, saved)
    assert (config.schedule, config.augment) == ("constant", "none")
