"""Errors a user can cause and fix. The CLI prints their message, never a traceback."""

from __future__ import annotations


def one_line(exc: object, limit: int = 300) -> str:
    """A message (a library's exception often spans lines: request ids, stack notes) as one line of at most
    ``limit`` characters, for an error that must stay one line."""
    return " ".join(str(exc).split())[:limit]


class TlzooError(Exception):
    """A problem the user can fix; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(TlzooError):
    """Bad arguments: unknown names, values out of range."""

    exit_code = 2


class UnknownBackboneError(UsageError):
    def __init__(self, name: str, suggestions: list[str]):
        self.name = name
        self.suggestions = suggestions
        hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"unknown backbone {name!r}.{hint} Run `tlzoo list-backbones` to see them all.")


class FreezeSpecError(UsageError):
    pass


class WeightsError(TlzooError):
    """Weights missing, unverifiable or corrupt."""


class DataError(TlzooError):
    """The dataset cannot be used as given."""


class PluginError(TlzooError):
    pass


class MissingDependencyError(TlzooError):
    def __init__(self, module: str, purpose: str):
        super().__init__(
            f"{purpose} needs the Python package {module!r}, which is not installed. "
            f"Install it (pip install {module}) and try again."
        )


class TrainingDiverged(TlzooError):
    """The loss became NaN or infinite: the learning rate is too high for this model and data."""

    def __init__(self, loss: float):
        super().__init__(
            f"training diverged: the loss became {loss} (not finite). Lower --lr (or --backbone-lr-mult) and "
            f"train again"
        )
