"""Errors shared across skyfleet, each with a message meant for a person."""


class SkyfleetError(Exception):
    """Base class for errors that the CLI prints as a plain message (no traceback)."""


class UnknownNameError(SkyfleetError, KeyError):
    """A model, accelerator or profile name that the catalog does not know."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.kind, self.name, self.known = kind, name, known
        super().__init__(f"unknown {kind} {name!r}; known {kind}s: {', '.join(sorted(known))}")

    def __str__(self) -> str:
        return str(self.args[0])


class DoesNotFitError(SkyfleetError):
    """A model whose weights (plus a minimal KV cache) do not fit the accelerators' memory."""


class ConfigError(SkyfleetError):
    """A config, workload, plan or scenario file that fails validation: names file and key."""
