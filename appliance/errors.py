"""One exception type whose message is shown to the operator as a single line.

Every failure a person can act on (wrong passphrase, tampered file, bad input) is raised as a
``MemoError`` naming the problem and what to do; anything else is a bug and shows a traceback.
"""


class MemoError(Exception):
    """An error with a one-line, actionable message."""


class IntegrityError(MemoError):
    """A vault or audit file failed authentication: it is corrupt or was tampered with."""


class UnlockError(MemoError):
    """The vault could not be unlocked with the secret given."""
