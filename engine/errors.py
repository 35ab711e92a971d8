"""SpecError: one line naming the file, the layer or kind, the field, and what to fix."""


class SpecError(ValueError):
    """A problem with layers.yaml (or a spec given as a string or dict)."""

    def __init__(self, file, where, message):
        self.file, self.where, self.message = file, where, message
        super().__init__(f"{file}: {where}: {message}" if where else f"{file}: {message}")
