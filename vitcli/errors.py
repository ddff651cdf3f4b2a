"""The one error type that the CLI turns into a single line (plus a hint)."""


class VitcliError(Exception):
    """A known, user-fixable problem: bad path, bad file, unknown variant, no network.

    `hint` says what to do about it; the CLI prints `error: <message>` and the hint,
    never a traceback (unless --debug).
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"
