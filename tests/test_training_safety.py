"""Nothing lost, nothing cryptic: signals, saves, sizes, damaged files and checkpoints that outlive a
comment.  Every bad input is one line and exit code 2, checked before any training is spent; a
signal saves (or says which checkpoint stays the resume point) and exits 130, or 143 for SIGTERM."""
import gzip
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from engine import training
from engine.compiler import memory
from engine.data import datasets
from engine.data.idx import DataError, read_idx
from engine.training import Config, Data, Trainer, checkpoint
from engine.training.checkpoint import CheckpointError

from conftest import MNIST, ROOT, SPEC, needs_mnist, rewrite_checkpoint, started

SCRIPT = ROOT / "scripts" / "train.py"
TINY = ["--network", "softmax-regression", "--dataset", "mnist", "--data-dir", str(MNIST), "--holdout", "500",
        "--limit", "64", "--test-limit", "64", "--batch-size", "32", "--no-progress"]


@pytest.fixture(scope="module")
def cli():
    import importlib.util
    spec = importlib.util.spec_from_file_location("train_script_safety", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_line_exit(cli, capsys, args, code=2):
    try:
        got = cli.main(args)
    except SystemExit as exit_:
        got = exit_.code
    out = capsys.readouterr()
    assert got == code, out.err
    assert out.err.count("\n") == 1 and "Traceback" not in out.err, out.err
    return out


def start(args, cwd):
    """train.py as a user starts it, its stdout read line by line."""
    return started(subprocess.Popen([sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True))


def wait_for(proc, text, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        line = proc.stdout.readline()
        if text in line:
            return
        if not line and proc.poll() is not None:
            break
    proc.kill()
    pytest.fail(f"train.py never printed {text!r}: {proc.communicate()[1]}")


def make_checkpoint(cli, capsys, tmp_path, *extra):
    path = tmp_path / "c.npz"
    assert cli.main(TINY + ["--epochs", "1", "--checkpoint", str(path), *extra]) == 0
    capsys.readouterr()
    return path


rewrite = rewrite_checkpoint


# -- lost work -------------------------------------------------------------------------------
@needs_mnist
def test_an_unwritable_checkpoint_folder_is_refused_before_training(cli, capsys):
    try:
        checkpoint.check_writable("/sys/probe.npz")
        pytest.skip("/sys takes files here")
    except OSError:
        pass
    out = one_line_exit(cli, capsys, TINY + ["--epochs", "1", "--checkpoint", "/sys/run.npz"])
    assert "--checkpoint /sys/run.npz: cannot write in /sys" in out.err
    assert "make /sys writable or give a --checkpoint path" in out.err and "free some space" not in out.err
    assert "epoch 1/1" not in out.out and "data:" not in out.out  # nothing was spent


@pytest.mark.parametrize("errno_name, advice", [("ENOSPC", "free some space"), ("EACCES", "writable"),
                                                ("EROFS", "writable"), ("EIO", "give another `checkpoint` path")])
def test_a_failed_save_says_what_to_do_by_its_reason(errno_name, advice):
    import errno
    exc = OSError(getattr(errno, errno_name), os.strerror(getattr(errno, errno_name)))
    assert advice in checkpoint.write_advice(exc, "runs/x.npz")
    assert ("free some space" in checkpoint.write_advice(exc, "runs/x.npz")) == (errno_name == "ENOSPC")


def small_run(mnist_test, epochs=1000):
    x, y = mnist_test
    return Data(x[:64], y[:64], x[64:96], y[64:96], "mnist"), Config(
        network="softmax-regression", dataset="mnist", optimizer="adam", lr=1e-3, batch_size=32, epochs=epochs, seed=0)


@needs_mnist
def test_a_second_ctrl_c_during_the_save_waits_for_it(mnist_test, tmp_path):
    import engine
    data, cfg = small_run(mnist_test)
    path = tmp_path / "run.npz"
    net = engine.load(SPEC, network="softmax-regression", check=False)

    def interrupt(t):
        if t.step == 3:
            os.kill(os.getpid(), signal.SIGINT)
    t = Trainer(net, data, cfg, checkpoint=path, progress=False, log=lambda *a: None, on_step=interrupt)
    real_save = checkpoint.save

    def save_with_a_second_ctrl_c(*args):
        if t.step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # arrives halfway through the save
        real_save(*args)
    training.checkpoint.save = save_with_a_second_ctrl_c
    try:
        outcome = t.run()
    finally:
        training.checkpoint.save = real_save
    assert outcome.status == "interrupted" and outcome.saved, outcome.message
    assert f"saved to {path}" in outcome.message and "another signal during the save waited" in outcome.message
    assert checkpoint.load(path).meta["step"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["run.npz"]


@needs_mnist
@pytest.mark.parametrize("sig, code, said", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "stopped by SIGTERM")], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_says_so_and_prints_the_resume_command(tmp_path, sig, code, said):
    path = tmp_path / "c.npz"
    proc = start(TINY + ["--epochs", "100000", "--checkpoint", path], tmp_path)
    wait_for(proc, "saved")  # an epoch's checkpoint is on disk
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.startswith(said) and "resume with:" in err and "--resume" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert checkpoint.load(path).meta["step"] >= 2


@needs_mnist
def test_ctrl_c_hammered_during_the_save_still_ends_in_one_message_and_a_valid_checkpoint(tmp_path):
    path = tmp_path / "c.npz"
    proc = start([*TINY[:8], "--limit", "64", "--test-limit", "32", "--batch-size", "32", "--no-progress",
                  "--network", "seven-layer", "--epochs", "100000", "--checkpoint", path], tmp_path)
    wait_for(proc, "saved")
    for _ in range(4):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.01)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "resume with:" in err.splitlines()[-1]
    checkpoint.load(path)


@needs_mnist
@pytest.mark.parametrize("module", ["numpy", "engine"], ids=["while numpy loads", "once the engine is loaded"])
def test_ctrl_c_while_the_script_starts_is_not_a_traceback(tmp_path, module):
    # -X importtime reports each import as it completes: the signal is sent once `module` is seen,
    # so it lands in the script's own start-up, not in the interpreter's (which no script can catch)
    proc = started(subprocess.Popen([sys.executable, "-X", "importtime", str(SCRIPT), *TINY, "--network", "seven-layer",
                                     "--epochs", "1", "--no-checkpoint"], cwd=tmp_path,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for line in proc.stderr:
        if line.startswith("import time:") and line.rstrip().endswith(f" {module}"):
            break
    else:
        pytest.fail(f"{module} was never imported")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    err = "\n".join(line for line in err.splitlines() if not line.startswith("import time:"))
    assert "Traceback" not in err, err
    assert proc.returncode == 130 and len(err.strip().splitlines()) == 1, err
    assert "interrupted" in err and "nothing was saved" in err or "nothing is saved" in err, err


@needs_mnist
def test_a_batch_that_cannot_fit_in_memory_is_refused_before_training(cli, capsys, monkeypatch):
    monkeypatch.setattr(memory, "available", lambda: 300 * 2 ** 20)
    args = [*TINY[:8], "--limit", "640", "--test-limit", "64", "--no-progress", "--no-checkpoint", "--epochs", "1",
            "--network", "seven-layer", "--batch-size", "1000000000"]
    out = one_line_exit(cli, capsys, args)
    assert "--batch-size 1000000000: training 'seven-layer' on 640 examples a step (every training example)" in out.err
    assert "needs about" in out.err and "but 300 MiB are available; use --batch-size" in out.err
    assert "epoch 1/1" not in out.out
    fits = int(out.err.split("use --batch-size ")[1].split()[0])
    assert 1 <= fits < 640


def test_the_memory_estimate_grows_with_the_batch_and_counts_the_optimizer():
    import engine
    net = engine.load(SPEC, check=False)
    small, large = memory.training_need(net, 8, "adam"), memory.training_need(net, 64, "adam")
    assert large > small > memory.training_need(net, 8, "sgd") > memory.inference_need(net, 8)
    assert 150 * 2 ** 20 < large < 400 * 2 ** 20  # the engine measures about 240 MiB at batch 64


@needs_mnist
@pytest.mark.parametrize("plot, fragment", [
    ("out.xyz", "'.xyz' is not an image format matplotlib writes; end it in .png, .pdf or .svg"),
    ("out", "the name has no image format"),
    ("/sys/plots/out.png", "cannot write in /sys/plots"),
], ids=["unknown format", "no suffix", "unwritable folder"])
def test_a_plot_path_is_checked_before_training(cli, capsys, tmp_path, plot, fragment):
    if plot.startswith("/sys") and not Path("/sys").is_dir():
        pytest.skip("no /sys here")
    out = one_line_exit(cli, capsys, TINY + ["--epochs", "1", "--no-checkpoint", "--plot", plot])
    assert fragment in out.err and "epoch 1/1" not in out.out


@needs_mnist
def test_unfinished_files_of_killed_saves_are_removed_and_a_live_save_is_not(cli, capsys, tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = tmp_path / ".c.npz.999999999.abcd1234.tmp"
        old_style = tmp_path / ".c.npz.k2j3h4g5.tmp"
        live = tmp_path / f".c.npz.{sleeper.pid}.zzzz9999.tmp"
        for f in (dead, old_style, live):
            f.write_bytes(b"x" * 1000)
        assert cli.main(TINY + ["--epochs", "1", "--checkpoint", str(tmp_path / "c.npz")]) == 0
        out = capsys.readouterr().out
        assert "removed 2 unfinished checkpoint files left by a killed save" in out
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["c.npz", live.name])
    finally:
        sleeper.kill()
        sleeper.wait()


# -- tracebacks and silence ------------------------------------------------------------------
FORGERIES = [
    ("epoch not a number", lambda m: m.update(epoch="abc"), "its epoch is 'abc', not a whole number"),
    ("negative step", lambda m: m.update(step=-1), "its step is -1, not a whole number"),
    ("step a fraction", lambda m: m.update(step=1.5), "its step is 1.5, not a whole number"),
    ("network a number", lambda m: m["config"].update(network=5), "network 5"),
    ("no settings", lambda m: m.update(config=[1, 2]), "it holds no training settings"),
]


@needs_mnist
@pytest.mark.parametrize("mode", ["--eval-only", "--resume"])
@pytest.mark.parametrize("forge, fragment", [f[1:] for f in FORGERIES], ids=[f[0] for f in FORGERIES])
def test_forged_checkpoint_metadata_is_one_line(cli, capsys, tmp_path, forge, fragment, mode):
    path = make_checkpoint(cli, capsys, tmp_path)
    rewrite(path, meta=forge)
    args = ([*TINY[2:8], "--test-limit", "64", "--no-progress"] if mode == "--eval-only" else TINY + ["--epochs", "2"])
    out = one_line_exit(cli, capsys, args + ["--checkpoint", str(path), mode])
    assert fragment in out.err


@needs_mnist
def test_eval_only_refuses_weights_that_are_not_finite(cli, capsys, tmp_path):
    path = make_checkpoint(cli, capsys, tmp_path)
    rewrite(path, arrays=lambda a: a.update({"params/dense/w": np.full_like(a["params/dense/w"], np.nan)}))
    out = one_line_exit(cli, capsys, [*TINY[2:8], "--checkpoint", str(path), "--eval-only"])
    assert "its weights are not finite (NaN or infinite) in dense.w" in out.err and "test accuracy" not in out.out


@needs_mnist
@pytest.mark.parametrize("flags, named", [
    (["--lr", "0.5"], "--lr does not apply"),
    (["--epochs", "3", "--optimizer", "sgd"], "--optimizer, --epochs do not apply"),
    (["--limit", "10"], "--limit does not apply"),
], ids=["lr", "epochs and optimizer", "limit"])
def test_eval_only_names_training_flags_it_cannot_use(cli, capsys, tmp_path, flags, named):
    path = make_checkpoint(cli, capsys, tmp_path)
    out = one_line_exit(cli, capsys, [*TINY[2:8], "--checkpoint", str(path), "--eval-only", *flags])
    assert named in out.err and "--eval-only evaluates the checkpoint as it was trained" in out.err


@needs_mnist
def test_a_tampered_data_order_is_called_tampered(cli, capsys, tmp_path):
    path = tmp_path / "c.npz"
    proc_args = TINY + ["--epochs", "2", "--checkpoint", str(path)]
    assert cli.main(TINY + ["--epochs", "1", "--checkpoint", str(path)]) == 0
    capsys.readouterr()

    def repeat_one(a):
        order = np.random.default_rng(0).permutation(64)
        order[0] = order[1]
        a["data/order"] = order
    rewrite(path, meta=lambda m: m.update(batch=1, step=3), arrays=repeat_one)
    out = one_line_exit(cli, capsys, proc_args + ["--resume"])
    assert "its data order is not an ordering of the 64 training examples" in out.err
    assert "this data has" not in out.err


@needs_mnist
def test_divergence_is_one_line_without_numpy_warnings(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), *TINY[2:8], "--limit", "128", "--test-limit", "32",
                           "--no-progress", "--no-checkpoint", "--epochs", "1", "--optimizer", "sgd", "--lr", "1e6"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "training stopped" in proc.stderr and "Try a smaller --lr" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Warning" not in proc.stderr, proc.stderr


# -- data files ------------------------------------------------------------------------------
def gzip_member(payload_parts):
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    return b"".join([co.compress(p) for p in payload_parts] + [co.flush()])


def test_a_gzip_bomb_is_refused_after_what_its_header_declares(tmp_path):
    header = bytes([0, 0, 8, 3]) + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    bomb = tmp_path / "t10k-images-idx3-ubyte.gz"
    zeros = bytes(1 << 20)
    bomb.write_bytes(gzip_member([header] + [zeros] * 256))  # 256 MiB inflated, about 250 KB on disk
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as info:
            read_idx(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "inflates to more than the 7,856 bytes its IDX header declares" in str(info.value)
    assert peak < 16 * 2 ** 20


def test_a_header_claiming_more_than_memory_is_called_damaged(tmp_path):
    header = bytes([0, 0, 8, 3]) + (0xFFFFFFFF).to_bytes(4, "big") * 2 + (28).to_bytes(4, "big")
    for name, data in (("raw", header + bytes(100)), ("gz", gzip.compress(header + bytes(100)))):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(DataError) as info:
            read_idx(path)
        assert "(4294967295, 4294967295, 28)" in str(info.value) and "the header is damaged" in str(info.value)
        assert "516508833823349276700" not in str(info.value)


@needs_mnist
def test_gunzipped_files_in_the_data_folder_are_found_and_verified(tmp_path):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name[:-3]).write_bytes(gzip.decompress((MNIST / name).read_bytes()))
    test = datasets.load("mnist", "test", data_dir=tmp_path, download=False)
    assert len(test) == 10000 and test.source == str(tmp_path)


def test_a_misspelt_data_dir_is_reported_missing(tmp_path):
    with pytest.raises(DataError) as info:
        datasets.load("mnist", "test", data_dir=tmp_path / "mnistx", download=True)
    assert f"{tmp_path / 'mnistx'}: the data directory given does not exist; check its spelling" in str(info.value)


# -- checkpoints that outlive a comment ------------------------------------------------------
SPEC_TEXT = SPEC.read_text()
HARMLESS = [
    ("a comment and blank lines", lambda t: "# my notes\n\n" + t.replace("# (12), plus the bias of (2)", "# eq. 12")),
    ("spacing inside an equation",
     lambda t: t.replace("z[...,j] = x[...,i] * w[i,j] + b[j]", "z[...,j]=x[...,i]*w[i,j]+b[j]")),
    ("an unrelated kind", lambda t: t.replace("kinds:\n", "kinds:\n  twice:\n    cites: x\n    input: [b, f]\n"
                                              "    forward:\n      - z[b,i] = 2 * x[b,i]\n    backward: derive\n", 1)),
    ("the other network's layers", lambda t: t.replace("units: 1024", "units: 512")),
    ("flow style rewritten as block style", lambda t: t.replace(
        "      - {name: dense, kind: dense, units: classes, activation: softmax, init: zeros}",
        "      - name: dense\n        kind: dense\n        units: classes\n"
        "        activation: softmax\n        init: zeros")),
]
MEANINGFUL = [
    ("an initialiser", lambda t: t.replace("activation: softmax, init: zeros}", "activation: softmax, init: he}"),
     "layer 'dense' hyper init 'zeros' -> 'he'"),
    ("the input", lambda t: t.replace("    training: {epochs: 10}", "    training: {epochs: 10}").replace(
        "  softmax-regression:\n    cites: \"Part 1: (12), (22)-(26)\"\n    input: auto",
        "  softmax-regression:\n    cites: \"Part 1: (12), (22)-(26)\"\n    input: [784, 1, 1]"),
     "input [28, 28, 1] -> [784, 1, 1]"),
]


def resumable(cli, capsys, tmp_path, edit):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_TEXT)
    path = make_checkpoint(cli, capsys, tmp_path, "--spec", str(spec))
    edited = edit(SPEC_TEXT)
    assert edited != SPEC_TEXT
    spec.write_text(edited)
    return TINY + ["--epochs", "2", "--checkpoint", str(path), "--resume", "--spec", str(spec)], path


@needs_mnist
@pytest.mark.parametrize("edit", [h[1] for h in HARMLESS], ids=[h[0] for h in HARMLESS])
def test_a_checkpoint_survives_edits_that_change_nothing(cli, capsys, tmp_path, edit):
    args, path = resumable(cli, capsys, tmp_path, edit)
    assert cli.main(args) == 0, capsys.readouterr().err
    assert checkpoint.load(path).meta["epoch"] == 2
    assert cli.main([*TINY[2:8], "--checkpoint", str(path), "--eval-only", "--spec", args[-1]]) == 0


@needs_mnist
@pytest.mark.parametrize("edit, change", [m[1:] for m in MEANINGFUL], ids=[m[0] for m in MEANINGFUL])
def test_a_checkpoint_is_refused_naming_what_changed(cli, capsys, tmp_path, edit, change):
    args, path = resumable(cli, capsys, tmp_path, edit)
    for mode in (args, [*TINY[2:8], "--checkpoint", str(path), "--eval-only", "--spec", args[-1]]):
        out = one_line_exit(cli, capsys, mode)
        assert "no longer means what it was trained as: " in out.err and change in out.err, out.err


@needs_mnist
def test_a_checkpoint_whose_jacobians_changed_evaluates_but_is_not_resumed(cli, capsys, tmp_path):
    """The weights mean what they did (the forward is the same); a resumed run would not have the bits."""
    args, path = resumable(cli, capsys, tmp_path, lambda t: t.replace("db[i] = dz[...,i]      ",
                                                                    "db[i] = dz[...,i] / 2 * 2", 1))
    change = "kind 'dense' backward b[0] 'db[i] = dz[...,i]' -> 'db[i] = dz[...,i] / 2 * 2'"
    out = one_line_exit(cli, capsys, args)
    assert "Jacobians" in out.err and change in out.err and "resume with the spec it was trained with" in out.err
    assert cli.main([*TINY[2:8], "--checkpoint", str(path), "--eval-only", "--spec", args[-1]]) == 0


def test_a_checkpoint_of_the_old_format_still_resumes_under_the_unchanged_file(tmp_path):
    import engine
    spec = engine.read(SPEC)
    old = checkpoint.Checkpoint({}, {}, {}, {"spec_hash": checkpoint.spec_hash(SPEC.read_bytes(), "seven-layer"),
                                             "network": "seven-layer"})
    meaning = checkpoint.meaning(spec, "seven-layer")
    checkpoint.check_spec(old, "old.npz", checkpoint.fingerprint(meaning), str(SPEC), "seven-layer", meaning,
                          checkpoint.spec_hash(SPEC.read_bytes(), "seven-layer"))
    with pytest.raises(CheckpointError):
        checkpoint.check_spec(old, "old.npz", checkpoint.fingerprint(meaning), str(SPEC), "seven-layer", meaning,
                              checkpoint.spec_hash(SPEC.read_bytes() + b"#", "seven-layer"))


@pytest.mark.parametrize("script", ["train.py", "plan.py"])
def test_a_python_without_the_dependencies_gets_one_line_on_setting_up(script, tmp_path):
    path = str(ROOT / "scripts" / script)
    code = ("import runpy, sys; sys.modules['numpy'] = None; "
            f"sys.argv = [{script!r}, '--help']; runpy.run_path({path!r}, run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "cannot import numpy" in out.stderr and "bash scripts/setup.sh" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
