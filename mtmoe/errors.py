"""Errors that the CLI turns into one clear line instead of a traceback."""


class MtmoeError(Exception):
    """A user-facing error: the message alone says what is wrong and where."""


class ConfigError(MtmoeError):
    """A malformed task, suite or run configuration.

    The message has the form ``<file>: key '<key>': <what was expected>``.
    """

    def __init__(self, source: str, key: str, expected: str):
        self.source, self.key, self.expected = source, key, expected
        where = f"key '{key}': " if key else ""
        super().__init__(f"{source}: {where}{expected}")
