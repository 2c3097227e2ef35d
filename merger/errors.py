"""The one user-facing error type.

Every problem a user can fix (a bad recipe, a missing folder, a malformed data file) is raised as a
`UserError`. The CLI prints each as one line `file: field: cause` and exits with code 2, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one input, located precisely enough to fix without reading code."""

    file: str
    field: str
    cause: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.field}" if self.field else self.file
        return f"{where}: {self.cause}"


class UserError(Exception):
    """One or more problems with what the user gave us; exit code 2."""

    def __init__(self, problems: list[Problem] | Problem):
        self.problems = problems if isinstance(problems, list) else [problems]
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def one(cls, file: str, field: str, cause: str) -> "UserError":
        return cls(Problem(str(file), field, cause))
