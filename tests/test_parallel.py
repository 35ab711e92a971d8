"""notation.runtime.parallel.matmul is np.matmul, whichever way it cuts the work over its threads."""
import queue
import signal
import threading
import time

import numpy as np
import pytest

from notation.runtime import parallel


@pytest.mark.parametrize("shapes", [
    ((144, 64, 64), (144, 64, 128)),  # a batch: cut along it
    ((7, 30, 40), (40, 50)),          # a batch against one matrix
    ((3136, 800), (800, 64)),         # tall: cut along the rows
    ((64, 3136), (3136, 1024)),       # wide: cut along the columns
    ((40, 300), (300, 301)),          # wide, an odd number of columns
    ((25, 50176), (50176, 32)),       # thin result: cut along the sum, then added
    ((3, 4), (4, 5)),                 # small: as it is
])
def test_matmul_equals_numpys_whichever_way_it_cuts(shapes):
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(s) for s in shapes)
    want = np.matmul(a, b)
    np.testing.assert_allclose(parallel.matmul(a, b), want, rtol=1e-12, atol=1e-9)
    out = np.empty_like(want)
    assert parallel.matmul(a, b, out=out) is out
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-9)



@pytest.fixture(autouse=True)
def no_blas_threads_spinning(monkeypatch):
    """Whatever ran before: for 0.1 s after OpenBLAS's threads ran, splits run on the caller alone."""
    monkeypatch.setattr(parallel, "_blas_spins", 0.0)


def test_transposed_operands_and_float32():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((900, 200)).astype(np.float32).T  # a transposed view, as a GEMM reads it
    b = rng.standard_normal((900, 300)).astype(np.float32)
    np.testing.assert_allclose(parallel.matmul(a, b), a @ b, rtol=1e-4, atol=1e-3)


def test_the_same_product_gives_the_same_bits_every_time():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((64, 3136)).astype(np.float32), rng.standard_normal((3136, 1024)).astype(np.float32)
    first = parallel.matmul(a, b)
    assert all(np.array_equal(first, parallel.matmul(a, b)) for _ in range(3))


def test_serial_blas_nests():
    with parallel.serial_blas():
        with parallel.serial_blas():
            x = parallel.matmul(np.ones((300, 300)), np.ones((300, 300)))
    assert x[0, 0] == 300


def test_the_callers_floating_point_error_handling_holds_in_the_workers():
    a = np.full((400, 400), 1e30, dtype=np.float32)
    with np.errstate(over="raise"):
        with pytest.raises(FloatingPointError):
            parallel.matmul(a, a)
    with np.errstate(over="ignore", invalid="ignore"):
        assert np.isinf(parallel.matmul(a, a)).all()


def test_large_gemms_may_be_left_to_blas_threads(monkeypatch):
    monkeypatch.setattr(parallel, "BLAS_THREADS_FLOPS", 0)  # NOTATION_BLAS_THREADS_FLOPS=0
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((64, 300)), rng.standard_normal((300, 200))
    np.testing.assert_allclose(parallel.matmul(a, b), a @ b, rtol=1e-12, atol=1e-9)


def test_one_worker_runs_each_product_whole(monkeypatch):
    monkeypatch.setattr(parallel, "WORKERS", 1)  # NOTATION_THREADS=1
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((144, 64, 64)), rng.standard_normal((144, 64, 128))
    np.testing.assert_allclose(parallel.matmul(a, b), np.matmul(a, b), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_each_shares_the_pieces_out_between_the_workers_each_once(monkeypatch, workers):
    monkeypatch.setattr(parallel, "WORKERS", workers)
    parts = []
    parallel.each(parts.append, range(7))
    assert sorted(map(tuple, parts)) == sorted(tuple(range(k, 7, workers)) for k in range(workers))


@pytest.mark.parametrize("workers, spans", [(1, [(0, 7)]), (2, [(0, 3), (3, 7)]), (3, [(0, 2), (2, 4), (4, 7)])])
def test_spans_cut_the_rows_into_one_consecutive_span_a_worker(monkeypatch, workers, spans):
    monkeypatch.setattr(parallel, "WORKERS", workers)
    monkeypatch.setattr(parallel, "_ENABLED", parallel._AVAILABLE)
    seen = []
    parallel.spans(lambda start, stop: seen.append((start, stop, threading.current_thread().name)), 7)
    assert sorted(s[:2] for s in seen) == spans
    assert [name for start, _, name in seen if start == 0] == [threading.current_thread().name]  # the first here
    assert all(name.startswith("notation-matmul") for start, _, name in seen if start)


@pytest.mark.parametrize("a_stack, b_stack", [((1, 6), (5, 6)), ((5, 1), (1, 6)), ((), (5, 6)), ((30,), ())])
def test_a_stack_of_blocks_with_either_side_broadcast_splits_along_its_longest_axis(a_stack, b_stack):
    rng = np.random.default_rng(5)
    a = rng.standard_normal(a_stack + (40, 30))
    b = rng.standard_normal(b_stack + (30, 50))
    out = np.empty(np.broadcast_shapes(a_stack, b_stack) + (40, 50))
    assert parallel.matmul(a, b, out=out) is out
    np.testing.assert_allclose(out, np.matmul(a, b), rtol=1e-12, atol=1e-9)


def test_the_caller_runs_one_part_itself_and_a_helper_the_other(monkeypatch):
    monkeypatch.setattr(parallel, "WORKERS", 2)
    threads = {}
    parallel.each(lambda part: threads.setdefault(tuple(part), threading.current_thread()), range(4))
    assert threads[(0, 2)] is threading.current_thread()
    assert threads[(1, 3)].name.startswith("notation-matmul")


def test_an_error_in_a_helpers_part_reaches_the_caller_and_the_helpers_carry_on(monkeypatch):
    monkeypatch.setattr(parallel, "WORKERS", 2)

    def fails_on_the_helper(part):
        if threading.current_thread().name.startswith("notation-matmul"):
            raise KeyError(part)

    with pytest.raises(KeyError):
        parallel.each(fails_on_the_helper, range(4))
    parts = []
    parallel.each(parts.append, range(4))
    assert sorted(map(tuple, parts)) == [(0, 2), (1, 3)]


def test_a_split_inside_a_helpers_part_runs_there_instead_of_waiting_for_itself(monkeypatch):
    monkeypatch.setattr(parallel, "WORKERS", 2)
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((2, 144, 64, 64)), rng.standard_normal((144, 64, 128))
    products = [None, None]

    def part(ks):
        for k in ks:
            products[k] = parallel.matmul(a[k], b)  # itself split in two

    parallel.each(part, range(2))
    for k in range(2):
        np.testing.assert_allclose(products[k], np.matmul(a[k], b), rtol=1e-12, atol=1e-9)


def test_a_ctrl_c_while_the_caller_waits_is_raised_once_the_helper_is_done(monkeypatch):
    monkeypatch.setattr(parallel, "WORKERS", 2)
    interrupted, done = threading.Event(), []

    def on_sigint(signum, frame):
        interrupted.set()
        raise KeyboardInterrupt

    def part(ks):
        if threading.current_thread().name.startswith("notation-matmul"):
            interrupted.wait(10)  # still working when the interrupt comes
            time.sleep(0.05)
            done.append(ks)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        threading.Timer(0.05, signal.pthread_kill, (threading.get_ident(), signal.SIGINT)).start()
        with pytest.raises(KeyboardInterrupt):
            parallel.each(part, range(2))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert done == [[1]]  # the helper's part finished before the caller went on


def _parts(monkeypatch, fn):
    """fn, recording the size of the part each thread was given."""
    monkeypatch.setattr(parallel, "WORKERS", 2)
    parts = {}

    def recorded(*inputs, out):
        parts[threading.current_thread().name] = out.size
        fn(*inputs, out=out)
    return recorded, parts


def test_a_large_elementwise_pass_is_cut_between_the_threads_with_the_same_bits(monkeypatch):
    rng = np.random.default_rng(7)
    dz = rng.standard_normal((64, 14, 14, 32, 1, 1)).astype(np.float32)
    mask = rng.random((64, 14, 14, 32, 2, 2)) < 0.25
    dx = np.empty((64, 14, 2, 14, 2, 32), np.float32).transpose(0, 1, 3, 5, 2, 4)  # a pool's (19), strided
    multiply, parts = _parts(monkeypatch, np.multiply)
    assert parallel.elementwise(multiply, (dz, mask), dx) is dx
    assert np.array_equal(dx, dz * mask)
    assert len(parts) == 2 and any(t.startswith("notation-matmul") for t in parts)
    assert len(set(parts.values())) == 1  # two equal halves


def test_a_pass_is_cut_along_the_outermost_axis_that_halves_evenly(monkeypatch):
    windows = np.arange(64 * 28 * 28 * 25, dtype=np.float32).reshape(64, 28, 28, 5, 5, 1)
    xc = np.empty((5, 5, 1, 64, 28, 28), np.float32)  # im2col's windows, channels first: 5 rows cut 2 against 3
    copy, parts = _parts(monkeypatch, lambda v, out: np.copyto(out, v))
    parallel.elementwise(copy, (windows.transpose(3, 4, 5, 0, 1, 2),), xc)
    assert np.array_equal(xc, windows.transpose(3, 4, 5, 0, 1, 2))
    assert sorted(parts.values()) == [xc.size // 2] * 2  # cut along b, the first even axis


@pytest.mark.parametrize("shape", [(3, 5), (3,) * 12])  # small; large, but no axis cuts evenly
def test_a_small_pass_or_one_without_an_even_cut_runs_whole_here(monkeypatch, shape):
    monkeypatch.setattr(parallel, "WORKERS", 2)
    threads = []
    out = np.empty(shape)
    parallel.elementwise(lambda x, out: threads.append(threading.current_thread()) or np.negative(x, out=out),
                         (np.ones(shape[-1]),), out)
    assert threads == [threading.current_thread()] and (out == -1).all()


def test_a_ctrl_c_landing_as_the_caller_takes_a_helpers_wake_up_does_not_hang_it(monkeypatch):
    monkeypatch.setattr(parallel, "WORKERS", 2)
    parallel._setup()

    class LosesTheFirstWakeUp(queue.SimpleQueue):
        lost = False

        def get(self, *args, **kwargs):
            item = super().get(*args, **kwargs)
            if not LosesTheFirstWakeUp.lost:  # as a signal handler would, before the caller keeps it
                LosesTheFirstWakeUp.lost = True
                raise KeyboardInterrupt
            return item

    monkeypatch.setattr(queue, "SimpleQueue", LosesTheFirstWakeUp)
    done, outcome = [], []

    def part(items):
        time.sleep(0.2 if threading.current_thread().name.startswith("notation-matmul") else 0)
        done.append(threading.current_thread().name)

    def caller():
        try:
            parallel.each(part, range(2))
        except KeyboardInterrupt:
            outcome.append("interrupted")

    thread = threading.Thread(target=caller, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the caller hung, waiting for a wake-up it had already taken"
    assert outcome == ["interrupted"] and len(done) == 2  # raised once the helper's part was done
