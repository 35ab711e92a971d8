"""Index notation made executable: the report's equations parsed, checked, lowered to einsum.

    from notation import Equation
    run = Equation("z[b,j] = x[b,i] * w[i,j]").compile(shapes={"x": (4, 3), "w": (3, 2)})
    z = run(x=x, w=w)
"""
from .equation import Equation, Run
from .language.errors import NotationError, NotationWarning, UserError
from .language.parser import TERM_FORMS
from .mathematics.constants import CONSTANTS, register_constant
from .mathematics.functions import FUNCTIONS, register_function
from .runtime.counters import counting

__all__ = ["Equation", "Run", "NotationError", "NotationWarning", "FUNCTIONS", "TERM_FORMS", "counting", "UserError",
           "register_function", "CONSTANTS", "register_constant"]
