"""squawk's findings of a whole plan in one line, for the top of the plan page and
its confirmation box (an error-level finding must not hide 2,000 px down)."""

from dataclasses import dataclass

from django.template.defaultfilters import pluralize


@dataclass(frozen=True)
class LintSummary:
    errors: int
    warnings: int
    unavailable: int  # files squawk could not check

    @property
    def text(self) -> str:
        text = (
            f"{self.errors} error{pluralize(self.errors)}, "
            f"{self.warnings} warning{pluralize(self.warnings)}"
        )
        if self.unavailable:
            text += f", {self.unavailable} file{pluralize(self.unavailable)} not checked"
        return text

    @property
    def level(self) -> str:
        return "error" if self.errors else "warning" if self.warnings or self.unavailable else ""


def lint_summary(results) -> LintSummary:
    results = list(results)
    errors = sum(len(result.errors) for result in results)
    return LintSummary(
        errors=errors,
        warnings=sum(len(result.findings) for result in results) - errors,
        unavailable=sum(1 for result in results if result.unavailable),
    )
