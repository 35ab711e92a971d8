"""notation.runtime.crew: helper threads that take parts of a split, handed over by spinning flags (where the C
library is built) or by queues alone; either way every part runs once and the caller waits for all."""
import threading
import time

import pytest

from notation.runtime import crew, fused

MODES = ["queues", pytest.param("flags", marks=pytest.mark.skipif(
    fused.flags() is None, reason=f"the C flags are not built: {fused.describe()}"))]


@pytest.fixture(params=MODES)
def team(request):
    team = crew.Crew(spin=request.param == "flags")
    team.grow(1)
    return team


def _run(team, calls):
    """team.run(calls), failing (not hanging) if it does not return within 10 s."""
    errors = []

    def run():
        try:
            team.run(calls)
        except BaseException as e:
            errors.append(e)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the caller hung, waiting for a part that was done or never woken"
    if errors:
        raise errors[0]


def _recording(log, delay=0.0):
    def part(name):
        time.sleep(delay)
        log.append((name, threading.current_thread().name))
    return part


def test_the_caller_runs_the_first_part_and_a_helper_the_second(team):
    log = []
    caller = threading.current_thread().name
    team.run([(_recording(log), ("mine",)), (_recording(log), ("theirs",))])
    assert sorted(log) == [("mine", caller), ("theirs", "notation-matmul-0")]


def test_many_hand_offs_in_a_row_each_run_once(team):
    """Quick ones (the helper still watching its flag) and ones after a pause (the helper asleep)."""
    counts = [0, 0]

    def count(k):
        counts[k] += 1
    for n in range(300):
        if n % 100 == 99:
            time.sleep((crew.SPIN_NS + crew.WAIT_NS) / 1e9)  # long enough for the helper to fall asleep
        _run(team, [(count, (0,)), (count, (1,))])
    assert counts == [300, 300]


def test_the_caller_waits_for_a_helper_part_longer_than_it_watches(team):
    """Past WAIT_NS the caller sleeps on its answer queue; the helper wakes it when done."""
    log = []
    slow = (crew.WAIT_NS / 1e9) * 5
    _run(team, [(_recording(log), ("mine",)), (_recording(log, slow), ("theirs",))])
    assert [name for name, _ in log] == ["mine", "theirs"]


def test_a_split_inside_the_callers_own_part_does_not_wait_on_itself(team):
    """The caller posts again while the helper still works on its first part (a nested split)."""
    log = []

    def outer(name):
        team.run([(_recording(log), (name + "/mine",)), (_recording(log), (name + "/theirs",))])
    _run(team, [(outer, ("outer",)), (_recording(log, 0.01), ("first",))])
    assert sorted(name for name, _ in log) == ["first", "outer/mine", "outer/theirs"]


def test_an_error_in_the_helpers_part_is_raised_here_and_the_helper_carries_on(team):
    def fails(_):
        raise KeyError("theirs")
    with pytest.raises(KeyError):
        _run(team, [(lambda _: None, ("mine",)), (fails, ("theirs",))])
    log = []
    _run(team, [(_recording(log), ("mine",)), (_recording(log), ("theirs",))])
    assert len(log) == 2


def test_two_threads_splitting_at_once_each_get_their_own_parts_done(team):
    """A program's two threads share the helper: every part runs once and each caller returns only
    after its own helper part is done (slow parts included, so callers sleep on their answers)."""
    counts, late = {}, []

    def part(name, delay):
        time.sleep(delay)
        counts[name] = counts.get(name, 0) + 1

    def caller(tag):
        for n in range(40):
            theirs = f"{tag}{n}/theirs"
            _run(team, [(part, (f"{tag}{n}/mine", 0.0)), (part, (theirs, 0.003 if n % 10 == 0 else 0.0))])
            if counts.get(theirs) != 1:
                late.append(theirs)
    threads = [threading.Thread(target=caller, args=(tag,)) for tag in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not late and len(counts) == 160 and set(counts.values()) == {1}


def test_a_part_started_runs_on_a_helper_while_the_caller_goes_on_until_finish(team):
    log, release = [], threading.Event()

    def slow(name):
        release.wait(10)
        _recording(log)(name)
    team.start(slow, ("aside",))
    assert team.busy()
    caller = threading.current_thread().name
    team.run([(_recording(log), ("mine",)), (_recording(log), ("split",))])  # the helper is busy: both here
    assert log == [("mine", caller), ("split", caller)]
    release.set()
    team.finish()
    assert log[-1] == ("aside", "notation-matmul-0") and not team.busy() and team.started == []


def test_an_error_in_a_started_part_is_raised_at_finish_and_the_helper_carries_on(team):
    def fails():
        raise KeyError("aside")
    team.start(fails, ())
    with pytest.raises(KeyError):
        team.finish()
    log = []
    team.run([(_recording(log), ("mine",)), (_recording(log), ("theirs",))])
    assert sorted(name for name, _ in log) == ["mine", "theirs"]
