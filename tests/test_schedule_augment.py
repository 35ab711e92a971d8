"""Learning-rate schedules and augmentation: pure functions of where the run is, each doing what
its name says, and refused by name when unknown."""
import math

import numpy as np
import pytest

from engine.errors import TrainingError
from engine.training import augment, schedule


def test_constant_keeps_the_rate():
    assert [schedule.constant(0.1, s, 10) for s in (0, 5, 10)] == [0.1, 0.1, 0.1]


def test_cosine_falls_from_the_rate_through_half_to_zero():
    lr, total = 0.01, 100
    rates = [schedule.cosine(lr, s, total) for s in range(total + 1)]
    assert rates[0] == lr and math.isclose(rates[50], lr / 2) and abs(rates[100]) < 1e-18
    assert all(a > b for a, b in zip(rates, rates[1:]))


def test_a_warm_up_rises_in_a_line_then_the_schedule_runs_as_if_begun_there():
    rate = schedule.warmed(schedule.cosine, 4)
    assert [rate(0.01, s, 14) for s in range(4)] == [0.0025, 0.005, 0.0075, 0.01]
    assert [rate(0.01, s, 14) for s in range(4, 15)] == [schedule.cosine(0.01, s, 10) for s in range(11)]


def test_no_warm_up_is_the_schedule_itself():
    assert schedule.warmed(schedule.cosine, 0) is schedule.cosine


def test_an_unknown_schedule_lists_the_valid_ones():
    with pytest.raises(TrainingError, match=r"schedule 'linear' not found, valid options are \['constant', 'cosine'\]"):
        schedule.get("linear")


def images(n=6, h=5, w=7):
    return np.random.default_rng(1).integers(1, 255, (n, h, w, 1)).astype(np.float32)


def test_flip_mirrors_some_images_left_to_right_and_leaves_the_rest():
    x = images(64)
    out = augment.apply(("flip",), x.copy(), np.random.default_rng(0))
    mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x)]
    kept = [np.array_equal(o, i) for o, i in zip(out, x)]
    assert all(m != k for m, k in zip(mirrored, kept))
    assert 16 < sum(mirrored) < 48


def shifts(x, out, distance):
    """The (dy, dx) of each output within `distance` of its image padded by zeros; None where none fits."""
    found = []
    for o, i in zip(out, x):
        padded = np.pad(i, ((distance, distance), (distance, distance), (0, 0)))
        found.append(next(((dy, dx) for dy in range(2 * distance + 1) for dx in range(2 * distance + 1)
                           if np.array_equal(padded[dy:dy + i.shape[0], dx:dx + i.shape[1]], o)), None))
    return found


def test_shift_moves_each_image_by_at_most_two_pixels_filling_with_zeros():
    x = images(32)
    moves = shifts(x, augment.apply(("shift",), x.copy(), np.random.default_rng(0)), 2)
    assert None not in moves, "not a shift of its own image"
    assert len(set(moves)) > 5


def test_shift1_moves_each_image_by_at_most_one_pixel_and_reaches_each_of_the_nine_moves():
    x = images(64)
    moves = shifts(x, augment.apply(("shift1",), x.copy(), np.random.default_rng(0)), 1)
    assert None not in moves and set(moves) == {(dy, dx) for dy in range(3) for dx in range(3)}


def test_shift_is_shift2_draw_for_draw():
    x = images(32)
    same = [augment.apply((name,), x.copy(), np.random.default_rng(5)) for name in ("shift", "shift2")]
    assert np.array_equal(*same)


def test_erase_fills_one_rectangle_in_about_half_of_the_images_with_noise_and_keeps_the_rest():
    x = np.full((200, 28, 28, 1), 2.0, np.float32)  # no noise in [0, 1) can equal 2
    out = augment.apply(("erase",), x.copy(), np.random.default_rng(0))
    erased = 0
    for o in out[..., 0]:
        rows, cols = np.nonzero(o != 2.0)
        if rows.size:
            erased += 1
            box = o[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            assert np.all((box >= 0) & (box < 1)), "the erased pixels are one filled rectangle"
            assert 0.02 * 784 * 0.5 <= box.size <= 0.4 * 784 * 1.5
    assert 70 < erased < 130


def test_erase_keeps_the_dtype_and_shape():
    out = augment.apply(("erase",), images(8).copy(), np.random.default_rng(0))
    assert out.dtype == np.float32 and out.shape == (8, 5, 7, 1)


@pytest.mark.parametrize("names", [("flip", "shift"), ("flip", "shift1"), ("erase",), ("flip", "shift1", "erase")])
def test_the_same_step_draws_the_same_batch_and_another_step_another(names):
    x = images(32)

    def at(epoch, batch):
        return augment.apply(names, x.copy(), augment.batch_generator(0, epoch, batch))
    assert np.array_equal(at(1, 3), at(1, 3))
    assert not np.array_equal(at(1, 3), at(1, 4)) and not np.array_equal(at(1, 3), at(2, 3))


@pytest.mark.parametrize("text, names", [("none", ()), ("", ()), ("flip", ("flip",)), ("flip,shift", ("flip", "shift")),
                                         ("shift + flip", ("shift", "flip")), (["flip"], ("flip",)),
                                         ("flip,shift1,erase", ("flip", "shift1", "erase"))])
def test_augmentations_are_named_joined_by_commas(text, names):
    assert augment.parse(text) == names


def test_an_unknown_augmentation_lists_the_valid_ones():
    with pytest.raises(TrainingError, match=r"augmentation 'rotate' not found, valid options are "
                                            r"\['erase', 'flip', 'shift'\] or shift1 to shift9"):
        augment.parse("flip,rotate")


@pytest.mark.parametrize("name", ["shift0", "shift10", "shift-1", "shifts"])
def test_a_shift_distance_outside_one_to_nine_is_refused(name):
    with pytest.raises(TrainingError, match=f"augmentation '{name}' not found"):
        augment.parse(name)
