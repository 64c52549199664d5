"""Errors of the training side that speak to the user: the ``lgfa`` command prints them in one line."""


class TrainingError(Exception):
    """Base of the training side's user-facing errors."""


class CheckpointError(TrainingError):
    """A file is not the checkpoint an option expects: the message says what was found and expected."""


class DataError(TrainingError):
    """Training data that cannot be used: the message names the file and what is wrong."""


class OptionError(TrainingError):
    """Options that do not make a training run; the message says which and why."""
