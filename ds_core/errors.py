"""The one base class of errors a user can cause: a bad path, size, setting, upload or file.

Every such error in DS-Lens derives from `UserError` (and from the builtin it has always been,
ValueError or RuntimeError, so older `except ValueError` code keeps working). The app shows a
UserError as a one-line message and the CLI prints it and exits with status 2; anything else is
a bug and is reported as one.
"""


class UserError(Exception):
    """An error the user can fix; its message says what is wrong and what to do."""
