"""Settings declared once: a dataclass field with its help text, read by the CLI and Dagster.

`cass train` options and the Dagster training config are both generated from `TrainConfig`
(and the cleanup's from `CleanupConfig`), so a default or a choice changes in one line.
"""

from __future__ import annotations

import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any


def option(default: Any, help: str, **limits: int) -> Any:
    """A settings field with the help text the CLI and the Dagster UI show, and optional
    limits (`min`)."""
    return field(default=default, metadata={"help": help, **limits})


@dataclass(frozen=True)
class OptionSpec:
    """One settings field as the front ends need it (`default` is MISSING when required)."""

    name: str
    type: Any  # resolved: Literal[...], int, float | None, ...
    default: Any
    help: str
    min: int | None = None

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def value_type(self) -> Any:
        """The type without an optional None: `float` for `float | None`."""
        kept = [t for t in typing.get_args(self.type) if t is not type(None)]
        return kept[0] if typing.get_origin(self.type) is types.UnionType and kept else self.type

    @property
    def choices(self) -> tuple[str, ...] | None:
        """The values of a Literal type, else None."""
        return (
            typing.get_args(self.type) if typing.get_origin(self.type) is typing.Literal else None
        )


def option_specs(settings: type, only: tuple[str, ...] | None = None) -> list[OptionSpec]:
    """The fields of a settings dataclass (all, or `only` these, in that order)."""
    hints = typing.get_type_hints(settings)
    by_name = {f.name: f for f in fields(settings)}
    specs = []
    for name in only or tuple(by_name):
        spec = by_name[name]
        specs.append(
            OptionSpec(
                name,
                hints[name],
                spec.default,
                spec.metadata.get("help", ""),
                spec.metadata.get("min"),
            )
        )
    return specs
