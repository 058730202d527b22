"""User-facing error types: the CLI turns any of these into one line on stderr and exit code 2."""


class CoopetitionError(Exception):
    """A mistake in what the user asked for (not a bug): reported as one line, exit code 2."""


class ConfigError(CoopetitionError):
    """A config value is out of range or inconsistent with another field."""


class DataError(CoopetitionError):
    """An input file (exemplar bank, eval sets, checkpoint, run dir) is missing or malformed."""
