"""What a run writes is never lost: a closed pipe, one path for two outputs, two runs on one path,
a full disk and a signal at any moment each end in a saved checkpoint or one line (exit 2)."""
import json
import os
import signal
import subprocess
import sys

import pytest

from engine.training import checkpoint, outputs

from conftest import ROOT, TINY_RUN, load_train_script, needs_mnist, refused_run, started

SCRIPT = ROOT / "scripts" / "train.py"
TINY = TINY_RUN + ["--batch-size", "32"]


@pytest.fixture(scope="module")
def cli():
    return load_train_script("train_script_outputs")


def refused(cli, capsys, args):
    out, err = refused_run(cli, capsys, args)
    return err


def start(args, cwd, **kwargs):
    return started(subprocess.Popen([sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd, text=True, **kwargs))


# -- output that cannot be written ------------------------------------------------------------
@needs_mnist
@pytest.mark.parametrize("progress", [[], ["--progress"]], ids=["lines", "with progress bars"])
def test_a_pipe_closed_early_costs_nothing_the_run_saves_and_exits_0(tmp_path, progress):
    path = tmp_path / "c.npz"
    args = [a for a in TINY if not progress or a != "--no-progress"]
    proc = start([*args, "--epochs", "3", "--checkpoint", path], tmp_path, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE)
    proc.stdout.readline()  # `| head -n 1`: one line read, then the pipe is closed
    proc.stdout.close()
    if progress:
        proc.stderr.close()  # the progress bars' pipe too
    assert proc.wait(timeout=120) == 0
    assert checkpoint.load(path).meta["epoch"] == 3


# -- one path for two outputs -------------------------------------------------------------------
def _same(tmp_path, how):
    """(checkpoint, other output's flag, its path) naming one file in the way `how` says."""
    ckpt = tmp_path / "run.png"
    if how == "plot":
        return ckpt, "--plot", ckpt
    if how == "relative":
        (tmp_path / "sub").mkdir()
        return ckpt, "--metrics", tmp_path / "sub" / ".." / "run.png"
    if how == "symlink":
        os.symlink(ckpt, tmp_path / "link.jsonl")
        return ckpt, "--metrics", tmp_path / "link.jsonl"
    if how == "hard link":
        (tmp_path / "m.jsonl").write_text("")
        os.link(tmp_path / "m.jsonl", tmp_path / "other.jsonl")
        return tmp_path / "c.npz", "--metrics", tmp_path / "m.jsonl", "--plot", tmp_path / "other.jsonl"
    return ckpt, "--metrics", ROOT / "layers.yaml"  # the spec itself


@needs_mnist
@pytest.mark.parametrize("how", ["plot", "relative", "symlink", "hard link", "spec"])
def test_one_path_for_two_outputs_is_refused_before_training(cli, capsys, tmp_path, how):
    ckpt, *other = _same(tmp_path, how)
    err = refused(cli, capsys, TINY + ["--epochs", "1", "--checkpoint", str(ckpt), *map(str, other)])
    assert ("are one file" in err or "is the spec file" in err) and "give each output a path of its own" in err
    assert not ckpt.exists() or how == "hard link"


# -- two runs on one path -----------------------------------------------------------------------
@needs_mnist
@pytest.mark.parametrize("flag", ["--checkpoint", "--metrics"])
def test_a_path_another_run_is_writing_is_refused(cli, capsys, tmp_path, flag):
    path = tmp_path / ("c.npz" if flag == "--checkpoint" else "m.jsonl")
    given = {"--checkpoint": ["--checkpoint", str(path)],
             "--metrics": ["--checkpoint", str(tmp_path / "mine.npz"), "--metrics", str(path)]}[flag]
    with outputs.claimed({flag[2:]: path}):  # another run holds it
        err = refused(cli, capsys, TINY + ["--epochs", "1", *given])
    assert f"{flag} {path} is being written by another run (process {os.getpid()})" in err
    assert not (tmp_path / "mine.npz").exists()


@needs_mnist
def test_an_existing_metrics_file_is_never_overwritten_and_resume_appends(cli, capsys, tmp_path):
    metrics = tmp_path / "m.jsonl"
    assert cli.main(TINY + ["--epochs", "1", "--checkpoint", str(tmp_path / "a.npz"), "--metrics", str(metrics)]) == 0
    before = metrics.read_text()
    err = refused(cli, capsys, TINY + ["--epochs", "1", "--checkpoint", str(tmp_path / "b.npz"), "--metrics",
                                       str(metrics)])
    assert "--metrics" in err and "already holds metrics" in err and "--resume" in err
    assert metrics.read_text() == before and not (tmp_path / "b.npz").exists()
    assert cli.main(TINY + ["--epochs", "2", "--checkpoint", str(tmp_path / "a.npz"), "--metrics", str(metrics),
                            "--resume"]) == 0
    epochs = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()
              if json.loads(line)["event"] == "epoch"]
    assert epochs == [1, 2]


# -- a full disk ----------------------------------------------------------------------------------
@needs_mnist
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_metrics_on_a_full_disk_are_one_line_and_the_epochs_are_saved(cli, capsys, tmp_path):
    path = tmp_path / "c.npz"
    assert cli.main(TINY + ["--epochs", "2", "--checkpoint", str(path), "--metrics", "/dev/full"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--metrics /dev/full: cannot write it (No space left on device)" in err
    assert checkpoint.load(path).meta["epoch"] == 2


@needs_mnist
def test_a_checkpoint_folder_without_room_for_one_checkpoint_is_refused_before_training(cli, capsys, tmp_path,
                                                                                        monkeypatch):
    monkeypatch.setattr(checkpoint, "free_bytes", lambda path: 20_000)  # a checkpoint here takes ~100 kB
    err = refused(cli, capsys, TINY + ["--epochs", "1", "--checkpoint", str(tmp_path / "c.npz")])
    assert "has 0.0 MB free, and one checkpoint of this run takes about" in err and "free some space" in err
    assert "epoch 1" not in capsys.readouterr().out


# -- signals ----------------------------------------------------------------------------------------
@needs_mnist
def test_sighup_saves_as_sigterm_does_and_exits_129(tmp_path):
    path = tmp_path / "c.npz"
    proc = start([*TINY, "--epochs", "100000", "--checkpoint", path], tmp_path, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE)
    for line in proc.stdout:
        if line.startswith("saved"):
            break
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 129 and err.startswith("stopped by SIGHUP") and "resume with:" in err, err
    assert checkpoint.load(path).meta["step"] >= 2


@needs_mnist
@pytest.mark.parametrize("extra, last, code", [([], "done:", 0), (["--lr", "-1"], "train.py: --lr", 2),
                                               (["--epochs", "x"], "train.py: argument --epochs", 2)],
                         ids=["after done", "after a refusal", "after a flag refused"])
def test_sigterm_after_the_last_line_changes_nothing(tmp_path, extra, last, code):
    args = [*TINY, "--epochs", "1", "--checkpoint", tmp_path / "c.npz", *extra]
    proc = start(args, tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stream = proc.stderr if code else proc.stdout
    for line in stream:
        if line.startswith(last):
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code and "Traceback" not in err and err.count("\n") <= 1 - bool(code), err


def test_two_runs_started_in_one_second_take_two_default_checkpoints(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.time, "strftime", lambda fmt: "20261207-103347")
    first = cli.default_checkpoint(cli.parser().parse_args(["--network", "zoo"]))
    outputs.lock_path(first).parent.mkdir(parents=True)
    outputs.lock_path(first).write_text("")  # its run has claimed it
    assert first == "runs/zoo-20261207-103347.npz"
    assert cli.default_checkpoint(cli.parser().parse_args(["--network", "zoo"])) == "runs/zoo-20261207-103347-2.npz"
