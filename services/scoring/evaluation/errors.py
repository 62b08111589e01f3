"""The evaluation's user error, shared by the run and the model scorer."""


class EvaluationError(ValueError):
    """A user error (no log, bad option, nothing to evaluate): the message says which."""
