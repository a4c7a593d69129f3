"""The one exception type the CLI turns into a single clear error line."""


class MmunlearnError(Exception):
    """A user-facing error: bad input, missing file, failed check. Its message names the file/field."""


class ConfigError(MmunlearnError):
    """params.yaml is missing, malformed, or holds a value of the wrong type."""


class DataError(MmunlearnError):
    """A benchmark file is missing or does not match the data model."""


class ValidationFailed(DataError):
    """The data-quality suites found a critical defect (the report names it)."""

    exit_code = 1
