"""scripts/bench.py is a user's tool too (issue 29): every bad flag, spec, checkpoint or batch ends in
one line and exit 2 before anything is timed; a reader that goes away (`| head`) ends it quietly;
--checkpoint times the engine from a trained state."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, SPEC, run_script, started

SCRIPT = ROOT / "scripts" / "bench.py"
QUICK = ["--batch", "2", "--rounds", "1", "--repeats", "1", "--warmup", "0", "--no-torch"]


def refused(*args):
    """bench.py's stderr where it refuses `args`: exit 2, one line, no traceback, nothing on stdout."""
    out = run_script("bench.py", *args, ok=False)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stdout == ""
    return out.stderr


@pytest.mark.parametrize("args, said", [
    (["--batch", "0"], "argument --batch: 0: give a batch size (at least 1)"),
    (["--batch", "-1"], "argument --batch: -1: give a batch size (at least 1)"),
    (["--batch", "two"], "argument --batch: 'two' is not a whole number; give a batch size"),
    (["--repeats", "0"], "argument --repeats: 0: give a number of steps (at least 1)"),
    (["--rounds", "0"], "argument --rounds: 0: give a number of rounds (at least 1)"),
    (["--torch-threads", "0"], "argument --torch-threads: 0: give a number of threads (at least 1)"),
    (["--warmup", "-1"], "argument --warmup: -1: give a number of steps (at least 0)"),
    (["--torch-threads", "100000"], "argument --torch-threads: 100000: give a number of threads (at most "),
], ids=["batch 0", "batch -1", "batch two", "repeats 0", "rounds 0", "torch threads 0", "warmup -1",
        "torch threads 100000"])
def test_a_count_out_of_range_is_one_line_naming_the_flag(args, said):
    assert said in refused(*args)


def test_an_empty_spec_is_one_line():
    assert "bench.py: /dev/null: the spec must be a mapping" in refused("--spec", "/dev/null", *QUICK)


def test_a_folder_given_as_the_spec_is_one_line():
    assert f"bench.py: {ROOT / 'scripts'}: cannot read it" in refused("--spec", ROOT / "scripts", *QUICK)


def test_an_unknown_network_is_one_line_listing_the_valid_ones():
    err = refused("--network", "resnot", *QUICK)
    assert "--network resnot: not found, valid options are" in err and "'resnet'" in err and "or all" in err


def test_a_batch_too_large_for_memory_is_refused_before_anything_is_timed():
    err = refused("--network", "softmax-regression", "--batch", "2", str(10 ** 15), *QUICK[2:])
    assert f"--batch {10 ** 15}: a training step of 'softmax-regression' on" in err
    assert "of memory, but" in err and "are available; use --batch" in err


def test_output_into_a_closed_pipe_ends_quietly():
    proc = started(subprocess.Popen([sys.executable, str(SCRIPT), *QUICK, "--batch", "2", "3"], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True))
    first = proc.stdout.readline()  # as `| head -n 1` reads, then goes away
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and first.startswith("fused loops: ")
    assert err == ""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
def test_a_full_disk_under_the_report_is_one_line():
    with open("/dev/full", "w") as full:
        out = subprocess.run([sys.executable, str(SCRIPT), *QUICK], stdout=full, stderr=subprocess.PIPE, text=True,
                             timeout=120)
    assert out.returncode == 2 and out.stderr == ("bench.py: cannot write the report to standard output (No space "
                                                  "left on device); send it where there is room\n")


# -- a trained state ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real training checkpoint of softmax-regression: two Adam steps on random images."""
    import engine
    from engine.training import Config, Data, Trainer
    from engine.training import checkpoint as ckpt_io
    path = tmp_path_factory.mktemp("run") / "run.npz"
    spec = engine.read(SPEC)
    net = engine.load(spec, network="softmax-regression")
    rng = np.random.default_rng(0)
    data = Data(rng.random((64, 28, 28, 1)), rng.integers(0, 10, 64), rng.random((8, 28, 28, 1)),
                rng.integers(0, 10, 8))
    config = Config(network="softmax-regression", dataset="mnist", optimizer="adam", lr=1e-3, batch_size=32,
                    epochs=1, seed=0)
    meaning = ckpt_io.meaning(spec, "softmax-regression")
    Trainer(net, data, config, spec_hash=ckpt_io.fingerprint(meaning), spec_file=str(SPEC), checkpoint=path,
            progress=False, log=lambda *a: None, meaning=meaning).run()
    return path


def test_a_checkpoint_is_benchmarked_as_its_network_from_its_trained_state(checkpoint):
    doc = json.loads(run_script("bench.py", "--checkpoint", checkpoint, *QUICK, "--json").stdout)
    (name, section), = doc["networks"].items()
    assert name == "softmax-regression" and section["weights"] == "trained"
    assert section["checkpoint"] == {"path": str(checkpoint), "step": 2, "optimizer": "adam", "lr": 0.001}


def test_the_engine_steps_on_from_the_checkpoints_weights_and_optimizer_state(checkpoint):
    import importlib.util

    import engine
    from engine.training import checkpoint as ckpt_io
    spec_ = importlib.util.spec_from_file_location("bench_engine", ROOT / "scripts" / "bench_engine.py")
    side = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(side)
    spec = engine.read(SPEC)
    x, y = side.batch_of((28, 28, 1), 10, 2, np.random.default_rng(0))
    eng = side.Engine(spec, "softmax-regression", 2, x, y, side.trained(checkpoint, spec, SPEC))
    assert eng.opt.t == 3  # the checkpoint's two steps, then the engine's first
    saved = ckpt_io.load(checkpoint)
    assert eng.opt.v["dense.w"].any() and not np.array_equal(eng.net.params["dense"]["w"], saved.params["dense"]["w"])


def test_a_checkpoint_of_a_network_not_asked_for_is_one_line(checkpoint):
    err = refused("--checkpoint", checkpoint, "--network", "zoo", *QUICK)
    assert "holds network 'softmax-regression', which --network does not name; add --network softmax-regression" \
        in err


def test_a_damaged_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really")
    err = refused("--checkpoint", bad, *QUICK)
    assert f"bench.py: {bad}: damaged or not a checkpoint" in err and "--checkpoint" in err


def test_a_missing_checkpoint_is_one_line(tmp_path):
    assert f"bench.py: --checkpoint {tmp_path / 'no.npz'}: no such file" in refused("--checkpoint", tmp_path / "no.npz",
                                                                                      *QUICK)


def test_a_checkpoint_of_a_network_that_now_means_something_else_is_one_line(checkpoint, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.read_text().replace("units: classes, activation: softmax, init: zeros}",
                                             "units: classes, activation: softmax, init: he}"))
    err = refused("--checkpoint", checkpoint, "--spec", spec, *QUICK)
    assert "network 'softmax-regression' of" in err and "no longer means what it was trained as" in err
    assert "start a new --checkpoint" in err


def test_the_batch_a_memory_refusal_advises_fits(monkeypatch, capsys):
    import importlib.util

    import engine
    from engine.compiler import memory
    module = importlib.util.spec_from_file_location("bench_for_memory", SCRIPT)
    bench = importlib.util.module_from_spec(module)
    module.loader.exec_module(bench)
    monkeypatch.setattr(memory, "available", lambda: 200 * 2 ** 20)
    assert bench.main(["--network", "seven-layer", "--batch", "1000", *QUICK[2:]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench.py: --batch 1000: a training step of 'seven-layer' on 1,000 examples needs about ")
    fits = int(err.split("use --batch ")[1].split()[0])
    net = engine.load(SPEC, check=False)
    assert memory.training_need(net, fits, "adam") <= 200 * 2 ** 20 < memory.training_need(net, fits + 8, "adam")
