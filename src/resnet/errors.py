"""The one exception type for bad input: the CLI prints it as a single line and exits non-zero."""


class ResNetError(Exception):
    """A problem with what the user asked for (a path, a flag, a file), not a bug."""
