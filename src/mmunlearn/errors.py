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


def one_line(error: BaseException, first_line_only: bool = False) -> str:
    """``error``'s message on one line, for a message of ours: libraries' messages often span lines (with
    ``first_line_only``, what follows the first line, e.g. the SQL of a database error, is left out)."""
    text = str(error).strip()
    return " ".join((text.splitlines()[0] if first_line_only and text else text).split())
