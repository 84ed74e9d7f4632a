"""The one error type for a user's mistake, importable from every layer: gptlab raises it wherever it checks what the
user gave it (a config value, a path, a prompt), and the entry points print it as one line (apps/errors.py). Any
other exception is a bug and keeps its traceback."""


class GptlabError(ValueError):
    """A problem with the user's input or environment; its message says what and how to fix it (a ValueError, so
    that code using gptlab as a library can catch it as one)."""


class GptlabFileNotFoundError(GptlabError, FileNotFoundError):
    """A file or directory the user named, or the data a run needs, is not there."""
