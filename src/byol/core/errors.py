"""The exceptions the command line turns into a one-line message and an exit code."""


class ByolError(Exception):
    """A problem the user can fix; its message names the problem and the fix."""

    exit_code = 2


class CollapseError(ByolError):
    """Pretraining stopped because the representations collapsed (collapse_stop)."""

    exit_code = 3


class Stopped(ByolError):
    """Pretraining stopped on SIGTERM or SIGINT after writing a checkpoint; exit code 128 + signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum
