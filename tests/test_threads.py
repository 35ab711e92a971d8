"""Whose threads run a network's products (engine/compiler/threads.py): ours or OpenBLAS's, chosen by
timing both at a pass's third call, with the same bits either way and no trace of the trial left."""
import numpy as np
import pytest

import engine
from engine.compiler import threads
from notation.runtime import parallel

from conftest import SPEC, TINY_RUN, load_train_script, needs_mnist


class Clock:
    """A clock that a call moves on by the time its side is given: ours or BLAS's."""

    def __init__(self, ours, blas):
        self.now, self.cost = 0.0, {True: ours, False: blas}

    def __call__(self):
        return self.now

    def call(self):
        self.now += self.cost[parallel.enabled()]


@pytest.fixture
def choosing(monkeypatch):
    """Both sides on offer whatever this machine's BLAS or cores, no warm-up beyond a call, and the
    process's own setting put back afterwards."""
    monkeypatch.setattr(parallel, "choosable", lambda: True)
    monkeypatch.setattr(parallel, "FORCED", None)
    monkeypatch.setattr(parallel, "_ENABLED", parallel._AVAILABLE)
    monkeypatch.setattr(threads, "WARM", 0.0)


@pytest.mark.parametrize("ours, blas, chosen", [(0.020, 0.030, True), (0.030, 0.020, False)])
def test_the_third_call_times_both_sides_and_keeps_the_faster(choosing, ours, blas, chosen):
    clock = Clock(ours, blas)
    choice = threads.Threads(clock)
    made = []
    answers = [choice.ours(("training", 64), lambda: made.append(1) or clock.call) for _ in range(4)]
    assert answers == [True, True, chosen, chosen]
    assert made == [1]  # one trial, at the third call
    assert choice.figures[("training", 64)] == pytest.approx({"ours": ours, "blas": blas})
    whose = "the engine's" if chosen else "OpenBLAS's"
    assert choice.describe() == [f"training at batch 64 on {whose} threads ({1e3 * ours:.1f} ms a call on the "
                                 f"engine's, {1e3 * blas:.1f} on OpenBLAS's)"]


def test_a_short_call_stays_on_ours_without_trying_blas(choosing):
    clock = Clock(threads.LONG / 2, 0.0)
    sides = []

    def call():
        sides.append(parallel.enabled())
        clock.call()

    choice = threads.Threads(clock)
    assert all(choice.ours(("inference", 8), lambda: call) for _ in range(5))
    assert sides and all(sides) and choice.describe() == []


def test_each_pass_and_batch_size_is_chosen_on_its_own(choosing):
    clock = Clock(0.030, 0.020)
    choice = threads.Threads(clock)
    for _ in range(3):
        choice.ours(("training", 64), lambda: clock.call)
    assert choice.ours(("training", 64), None) is False
    assert choice.ours(("training", 32), None) is True and choice.ours(("inference", 64), None) is True


@pytest.mark.parametrize("forced", [True, False])
def test_notation_parallel_set_is_obeyed_without_a_trial(monkeypatch, forced):
    monkeypatch.setattr(parallel, "FORCED", forced)
    choice = threads.Threads()
    assert [choice.ours(("training", 64), lambda: pytest.fail("no trial")) for _ in range(4)] == [forced] * 4


def test_the_trial_leaves_the_network_as_training_without_it_would(choosing, monkeypatch):
    monkeypatch.setattr(threads, "LONG", 0.0)  # a trial however short the step
    tried, plain = (engine.load(SPEC, network="zoo", check=False, seed=0) for _ in range(2))
    plain.threads.chosen[("training", 8)] = True  # never tried
    x = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    labels = np.arange(8) % 10
    for net in (tried, plain):
        for _ in range(3):  # dropout draws its masks, batch norm moves its running statistics
            _, grads = net.loss_and_grads(x, labels)
        net.grads = grads
    assert ("training", 8) in tried.threads.figures  # the trial ran, its calls put back
    for layer, ps in plain.grads.items():
        for p, g in ps.items():
            assert np.array_equal(tried.grads[layer][p], g), (layer, p)
    for layer, arrays in plain.state.items():
        for n, a in arrays.items():
            assert np.array_equal(tried.state[layer][n], a), (layer, n)
    assert tried.rng.bit_generator.state == plain.rng.bit_generator.state


def test_on_openblas_threads_a_product_of_one_row_still_sums_on_one_thread():
    """OpenBLAS's threads cut a GEMV along its sum (other bits); BLAS's side keeps those on one."""
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((1, 200_000), np.float32), rng.standard_normal((200_000, 10), np.float32)
    with parallel.threads(True), parallel.serial_blas():
        ours = parallel.matmul(a, b)
    with parallel.threads(False):
        assert np.array_equal(parallel.matmul(a, b), ours)


@needs_mnist
def test_a_training_run_says_whose_threads_each_trial_chose_once(choosing, monkeypatch, capsys):
    monkeypatch.setattr(threads, "LONG", 0.0)
    cli = load_train_script()
    assert cli.main(TINY_RUN + ["--epochs", "3", "--batch-size", "32"]) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("threads: ")]
    # training at batch 32 (at its third step), inference at batch 32 (at the second epoch's test set)
    assert sorted(line.split(" on ")[0] for line in said) == ["threads: inference at batch 32",
                                                              "threads: training at batch 32"]
