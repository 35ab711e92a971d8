"""UserError, the root of every error raised for bad input, and NotationError: one message that names
the equation, points at the fault and says what to do."""


class UserError(ValueError):
    """Bad input, named with what to do: an equation, a spec, data, a checkpoint, a setting or an array.

    Every error this project raises for its users derives from it (a ValueError, as einops'
    EinopsError), so a script catches this one class and prints `one_line()`."""

    def one_line(self) -> str:
        return one_line(str(self))


def one_line(message) -> str:
    """A multi-line message (a DataError's list of searched places) as one line for the command line."""
    out, in_list = "", False
    for line in str(message).splitlines():
        if not line.strip():
            continue
        item = line[:1].isspace()
        sep = "" if not out else ", " if item and in_list else "; " if in_list else " "
        out += sep + line.strip()
        in_list = item
    return out


class NotationError(UserError):
    """A bad equation, size or operand; the message carries the equation and a caret line."""

    def __init__(self, message, source=None, span=None, hint=None):
        self.reason = message
        self.source = source
        self.span = span
        self.hint = hint
        super().__init__(self._render())

    def _render(self):
        text = self.reason
        if self.hint:
            text += f"; {self.hint}"
        if self.source is None:
            return text
        lines = [text, f"  in: {self.source}"]
        if self.span is not None:
            start, end = self.span
            start = max(0, min(start, len(self.source)))
            width = max(1, min(end, len(self.source) + 1) - start)
            lines.append("      " + " " * start + "^" * width)
        return "\n".join(lines)

    def one_line(self):
        """The reason, the hint and the equation on one line, for logs and CLI messages."""
        text = self.reason + (f"; {self.hint}" if self.hint else "")
        if self.source is None:
            return text
        source = self.source if len(self.source) <= 200 else self.source[:200] + "..."
        return f"{text} (in: {source})"

    def located(self, source, span=None):
        """The same error attached to an equation, for errors raised below the parser."""
        return NotationError(self.reason, source, span if span is not None else self.span, self.hint)


class NotationWarning(UserWarning):
    """An equation that is valid but likely not what was meant (an index summed over one factor alone)."""


for _public in (UserError, NotationError, NotationWarning):  # shown (and pickled) where users import them from
    _public.__module__ = "notation"
