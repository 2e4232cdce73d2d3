"""What went wrong in a codegen run: every problem at once, each with its file and JSON pointer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from streamtools.errors import ConfigurationError


class CodegenError(ConfigurationError):
    """A schema cannot be turned into code; the message names the file and what to change.

    `path` is the offending schema file (or the directory), as given on the command line.
    """

    def __init__(self, path: Path | str, what: str, todo: str) -> None:
        super().__init__(f"{Path(path).as_posix()}: {what} — {todo}")
        self.path = Path(path)
        self.errors: list[CodegenError] = [self]
        """Every problem of the run, one line each (just this one when there is one)."""

    @classmethod
    def collect(cls, errors: Sequence[CodegenError]) -> CodegenError:
        """One error for all of `errors`: their lines, the first one's path."""
        if len(errors) == 1:
            return errors[0]
        combined = cls(errors[0].path, "", "")
        combined.args = ("\n".join(str(error) for error in errors),)
        combined.errors = list(errors)
        return combined


class Problems:
    """Every problem and notice of one run, so that a user sees them all at once.

    Errors stop the run (after every file was looked at); notices are printed, one line each,
    and the run goes on: an unknown keyword taken as an annotation, a renamed attribute.
    """

    def __init__(self) -> None:
        self.errors: list[CodegenError] = []
        self.notices: list[str] = []

    def add(self, path: Path, what: str, todo: str) -> None:
        error = CodegenError(path, what, todo)
        if str(error) not in {str(known) for known in self.errors}:
            self.errors.append(error)

    def notice(self, path: Path, text: str) -> None:
        line = f"{path.as_posix()}: {text}"
        if line not in self.notices:
            self.notices.append(line)

    def raise_any(self) -> None:
        if self.errors:
            raise CodegenError.collect(self.errors)
