"""Index notation made executable: the report's equations parsed, checked, lowered to einsum.

    from notation import Equation
    run = Equation("z[b,j] = x[b,i] * w[i,j]").compile(shapes={"x": (4, 3), "w": (3, 2)})
    z = run(x=x, w=w)
"""
from .constants import CONSTANTS, register_constant
from .counters import counting
from .equation import Equation, Run
from .errors import NotationError, NotationWarning, UserError
from .functions import FUNCTIONS, register_function
from .parser import TERM_FORMS

__all__ = ["Equation", "Run", "NotationError", "NotationWarning", "FUNCTIONS", "TERM_FORMS", "counting", "UserError",
           "register_function", "CONSTANTS", "register_constant"]
