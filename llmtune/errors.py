"""Errors meant for the user: shown as-is, without a traceback, exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """Something the user wrote or passed is wrong (recipe, data, paths, flags).

    The message names where (file, line or row) and how to fix it. The CLI prints it
    and exits with code 2.
    """

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = problems or []
        super().__init__(message)

    def render(self) -> str:
        if not self.problems:
            return str(self)
        lines = [str(self)] + [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class RecipeError(UserError):
    """One or more problems in a recipe, all reported at once."""


class DataError(UserError):
    """A data file is missing, malformed, or does not fit the task."""


class TrainingDiverged(Exception):
    """The loss became NaN or inf; the run stops, keeping the last good checkpoint."""

    exit_code = 1
