"""notation: each bad input is one NotationError that names the equation, points at the fault and says what to do."""

import ast
from pathlib import Path

import numpy as np
import pytest

import notation
from notation import TERM_FORMS, Equation, NotationError

CONV = "z[b,i,j,k] = x[b, s1*i+p, s2*j+q, r] * w[P-p, Q-q, r, k]"


def parse_error(source):
    with pytest.raises(NotationError) as info:
        Equation(source)
    return str(info.value)


def compile_error(source, shapes, **symbols):
    with pytest.raises(NotationError) as info:
        Equation(source).compile(shapes=shapes, symbols=symbols)
    return str(info.value)


def call_error(source, shapes, **arrays):
    run = Equation(source).compile(shapes=shapes)
    with pytest.raises(NotationError) as info:
        run(**arrays)
    return str(info.value)


def assert_points_at(message, source, fragment, nth=1):
    """The message quotes `source` and puts carets under the nth occurrence of `fragment`."""
    lines = message.splitlines()
    quoted = f"  in: {source}"
    assert quoted in lines, message
    start = -1
    for _ in range(nth):
        start = source.index(fragment, start + 1)
    assert lines[lines.index(quoted) + 1] == " " * (len("  in: ") + start) + "^" * len(fragment), message


def assert_points_past_the_end(message, source):
    lines = message.splitlines()
    assert lines[lines.index(f"  in: {source}") + 1] == " " * (len("  in: ") + len(source)) + "^", message


# -- syntax ---------------------------------------------------------------------------------

def test_stray_operator_is_a_syntax_error_at_that_operator():
    source = "z[b,j] = x[b,i] * * w[i,j]"
    message = parse_error(source)
    assert "expected a tensor, number or function, found '*'" in message
    assert_points_at(message, source, "*", nth=2)


def test_unclosed_bracket_points_past_the_end():
    source = "z[b,j] = x[b,i] * w[i,j"
    message = parse_error(source)
    assert "expected ']', found the end of the equation" in message
    assert_points_past_the_end(message, source)


def test_factors_without_an_operator_ask_for_one():
    source = "z[b,j] = x[b,i] w[i,j]"
    message = parse_error(source)
    assert "join factors with '*'" in message
    assert_points_at(message, source, "w")


def test_equation_without_equals_shows_the_expected_form():
    source = "z[b,j] x[b,i]"
    message = parse_error(source)
    assert "needs '='" in message and "z[b,j] = x[b,i] * w[i,j]" in message


def test_unknown_function_lists_the_known_ones():
    source = "z[i] = softplus(x[i])"
    message = parse_error(source)
    assert "unknown function 'softplus'" in message and "'relu'" in message and "'sigmoid'" in message
    assert_points_at(message, source, "softplus")


# -- names ------------------------------------------------------------------------------------

def test_unknown_tensor_asks_for_its_shape():
    source = "z[b,j] = x[b,i] * v[i,j]"
    message = compile_error(source, {"x": (2, 3), "w": (3, 4)})
    assert "unknown tensor 'v'" in message and "give its shape in shapes=" in message
    assert_points_at(message, source, "v[i,j]")


def test_unknown_scalar_symbol_asks_for_its_value():
    source = "z[b,j] = eta * x[b,i] * w[i,j]"
    message = compile_error(source, {"x": (2, 3), "w": (3, 4)})
    assert "unknown symbol 'eta'" in message and "give its value in symbols=" in message
    assert_points_at(message, source, "eta")


def test_unknown_stride_symbol_points_into_the_index_term():
    message = compile_error(CONV, {"x": (2, 5, 5, 1), "w": (3, 3, 1, 2)}, s2=1)
    assert "unknown symbol 's1'" in message and "symbols=" in message
    assert_points_at(message, CONV, "s1*i")


# -- sizes ------------------------------------------------------------------------------------

def test_left_index_bound_by_nothing_on_the_right():
    source = "z[b,k] = x[b,i] * w[i,j]"
    message = compile_error(source, {"x": (2, 3), "w": (3, 4)})
    assert "index 'k' on the left is bound by nothing on the right" in message
    assert "give the shape of 'z' in shapes=" in message
    assert_points_at(message, source, "k")


def test_one_index_given_two_sizes():
    source = "z[b,j] = x[b,i] * w[i,j]"
    message = compile_error(source, {"x": (2, 3), "w": (4, 4)})
    assert "index 'i' has size 4 here (axis 0 of w) but size 3 at axis 1 of x" in message
    assert "make the shapes agree" in message
    assert_points_at(message, source, "i", nth=2)


def test_symbol_that_disagrees_with_a_shape():
    source = "J = -1/B * y[b,i]"
    message = compile_error(source, {"y": (3, 4)}, B=5)
    assert "index 'b' has size 5 here (B = 5) but size 3 at axis 0 of y" in message
    assert_points_at(message, source, "B")


def test_count_that_disagrees_with_a_shape():
    source = "z[b, i*J*K + j*K + k] = x[b,i,j,k]"
    message = compile_error(source, {"x": (2, 3, 4, 5)}, J=7)
    assert "index 'j' has size 7 here (J = 7) but size 4 at axis 2 of x" in message
    assert_points_at(message, source, "J")


def test_kernel_larger_than_the_image_does_not_fit():
    message = compile_error(CONV, {"x": (2, 3, 3, 1), "w": (4, 4, 1, 2)}, s1=1, s2=1)
    assert "the window s1*i + p does not fit axis 1 of x, which has 3 entries" in message
    assert "use a smaller kernel or stride, or a larger input" in message
    assert_points_at(message, CONV, "s1*i+p")


def test_result_shape_too_small_for_a_scatter():
    source = "z[2*i] = x[i]"
    message = compile_error(source, {"x": (3,), "z": (3,)})
    assert "the result position 2*i runs over 0..4 but axis 0 of z has 3 entries" in message
    assert "give a shape for 'z' that holds every position" in message
    assert_points_at(message, source, "2*i")


@pytest.mark.parametrize("stride", [0, -1, 1.5])
def test_stride_must_be_a_positive_whole_number(stride):
    message = compile_error(CONV, {"x": (2, 5, 5, 1), "w": (3, 3, 1, 2)}, s1=stride, s2=1)
    assert f"stride s1 = {stride} must be a positive whole number" in message
    assert "set s1 to 1 or more" in message
    assert_points_at(message, CONV, "s1*i")


def test_operand_with_the_wrong_number_of_index_terms():
    source = "z[i] = x[i]"
    message = compile_error(source, {"x": (3, 2)})
    assert "'x' has 1 index term(s) here but its shape (3, 2) has 2 axes" in message
    assert_points_at(message, source, "x[i]")


# -- index terms the lowering cannot handle ----------------------------------------------------

@pytest.mark.parametrize("source, fragment, reason", [
    ("z[i,j] = x[i*j]", "i*j", "the product i*j of two indices is not affine"),
    ("z[i] = x[(i+1)]", "(", "parentheses are not accepted inside an index term"),
    ("z[i] = x[i/2]", "/", "division is not accepted inside an index term"),
    ("z[i] = x[1.5*i]", "1.5", "index terms take whole numbers, not 1.5"),
])
def test_unsupported_index_term_lists_the_accepted_forms(source, fragment, reason):
    message = parse_error(source)
    assert reason in message and TERM_FORMS in message
    assert_points_at(message, source, fragment)


def test_division_by_a_tensor_is_refused():
    source = "z[i] = x[i] / y[i]"
    message = parse_error(source)
    assert "only division by a non-zero scalar" in message and "multiply by a tensor instead" in message
    assert_points_at(message, source, "y[i]")


# -- at call time --------------------------------------------------------------------------------

def test_wrong_array_shape_at_call_time():
    source = "z[i] = x[i] * y[i]"
    message = call_error(source, {"x": (3,), "y": (3,)}, x=np.zeros(3), y=np.zeros(4))
    assert "'y' has shape (4,) but this run was compiled for (3,)" in message
    assert "compile again for the new shape" in message
    assert_points_at(message, source, "y[i]")


def test_missing_operand_at_call_time():
    source = "z[i] = x[i] * y[i]"
    message = call_error(source, {"x": (3,), "y": (3,)}, x=np.zeros(3))
    assert "missing operand 'y'" in message and "call with x=..., y=..." in message
    assert_points_at(message, source, "y[i]")


def test_unexpected_operand_at_call_time():
    message = call_error("z[i] = x[i]", {"x": (3,)}, x=np.zeros(3), y=np.zeros(3))
    assert "unexpected operand(s) ['y']" in message and "this equation reads ['x']" in message


def test_positions_without_a_max():
    message = call_error("z[i] = x[i]", {"x": (3,)}, x=np.zeros(3), positions=True)
    assert "positions=True needs a max[...] in the equation" in message


# -- equations are parsed, never evaluated -------------------------------------------------------

@pytest.mark.parametrize("source", [
    "z[i] = __import__('os').system('true')",
    "z[i] = x[i].__class__",
    "z[i] = x[i]; import os",
    "z[i] = exec(x[i])",
    "z[i] = __import__(x[i])",
])
def test_python_in_an_equation_is_a_notation_error(source):
    parse_error(source)


def test_notation_source_never_calls_eval_or_exec():
    for path in Path(notation.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        called = {node.func.id for node in ast.walk(tree)
                  if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
        assert not called & {"eval", "exec", "compile", "__import__"}, path


def test_an_index_spelt_as_a_longer_name_is_told_that_indices_are_one_letter():
    source = "z[b,i,j,k] = x[b,i,jj,k]"
    message = compile_error(source, {"x": (1, 2, 3, 4)})
    assert message.startswith("'jj' is no index: an index is one lower-case letter")
    assert "write one letter for an index" in message
    assert_points_at(message, source, "jj")
