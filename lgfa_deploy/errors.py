"""The one error type the ``lgfa`` command turns into a one-line message and exit code 2."""


class LgfaError(Exception):
    """Bad input or an unusable file: the message names the problem and the fix."""
