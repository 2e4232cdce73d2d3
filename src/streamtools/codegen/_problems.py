"""What went wrong in a codegen run: every problem at once, each with its file and JSON pointer."""

from __future__ import annotations

from pathlib import Path

from streamtools.errors import CodegenError


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
