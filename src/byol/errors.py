"""The one exception type the command line turns into a one-line message."""


class ByolError(Exception):
    """A problem the user can fix; its message names the problem and the fix."""
