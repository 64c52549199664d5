"""Errors of the training side that speak to the user."""


class CheckpointError(Exception):
    """A file is not the checkpoint an option expects: the message says what was found and expected."""
