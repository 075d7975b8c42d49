"""The exceptions the command line turns into a one-line message and an exit code."""


class ByolError(Exception):
    """A problem the user can fix; its message names the problem and the fix."""

    exit_code = 2


class CollapseError(ByolError):
    """Pretraining stopped because the representations collapsed (collapse_stop)."""

    exit_code = 3
