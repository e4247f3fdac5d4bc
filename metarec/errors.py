"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class MetarecError(Exception):
    """A problem with the user's input or environment (not a bug): shown as one line, exit code 2."""
