"""The one exception type users see: a single line naming what is wrong and how to fix it."""


class SrscaleError(Exception):
    """A user-facing error. The message is one line: what was wrong, and how to fix it."""
