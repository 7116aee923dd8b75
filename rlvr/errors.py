"""Errors meant for the user: one line, no traceback (the CLI exits with status 2)."""


class ConfigError(ValueError):
    """A recipe, override or input file that cannot run. The message is one line for the user."""
