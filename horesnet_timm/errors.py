"""The one error type of the package's commands.

A `HoresnetError` is a failure whose cause the user can act on: its message names the cause and the
way out, in one line where possible. The `horesnet` command prints it without a traceback and exits
with its `exit_code`: 1 for failures, 2 for usage errors (argparse's own status for bad flags).
"""

__all__ = ['HoresnetError', 'UsageError']


class HoresnetError(Exception):
    """A failure with a cause the user can fix; the message says what it is and what to do."""
    exit_code = 1


class UsageError(HoresnetError):
    """Flags that contradict each other or the inputs they name."""
    exit_code = 2
