"""The one user-facing error type.

Every problem a user can fix (a bad recipe, a missing folder, a malformed data file) is raised as a
`UserError`. The CLI prints each as one line `file: field: cause` and exits with code 2, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError


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
    def one(cls, file: str, field: str, cause: str) -> UserError:
        return cls(Problem(str(file), field, cause))


def problems_from(exc: ValidationError, file: str, prefix: str = "", extra_hint: str = "") -> list[Problem]:
    """A pydantic error as one line per fault: the dotted field path and pydantic's message.

    `prefix` places the model inside its file (`dpo`, `eval`); `extra_hint` follows "unknown field" so the user
    learns which fields exist.
    """
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        field = ".".join(part for part in (prefix, loc) if part) or prefix
        if err["type"] == "extra_forbidden":
            cause = "unknown field" + (f"; {extra_hint}" if extra_hint else "")
        else:
            cause = err["msg"].removeprefix("Value error, ")
        problems.append(Problem(str(file), field, cause))
    return problems
