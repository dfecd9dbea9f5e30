"""What the `cass` command modules share: options generated from a settings dataclass
(`domain.options`: one per field, with its default, help, choices and limits, so the CLI
never restates a default) and checked picture targets."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import click

from cass_pipeline.domain.options import OptionSpec, option_specs


def click_option(spec: OptionSpec):
    """`--name-with-dashes` for a field; booleans become `--x/--no-x` switches, Literals
    choices, and a `min` a range."""
    flag = "--" + spec.name.replace("_", "-")
    if spec.required:
        raise TypeError(f"{flag}: a CLI option needs a default")
    if spec.value_type is bool:
        return click.option(
            f"{flag}/--no-{flag[2:]}",
            spec.name,
            default=spec.default,
            show_default=True,
            help=spec.help,
        )
    kind = click.Choice(spec.choices) if spec.choices else spec.value_type
    if spec.min is not None:
        kind = (click.IntRange if kind is int else click.FloatRange)(min=spec.min)
    return click.option(
        flag,
        spec.name,
        default=spec.default,
        show_default=spec.default is not None,
        type=kind,
        help=spec.help,
    )


def options_of(settings: type, only: tuple[str, ...] | None = None):
    """A decorator adding an option for each field of `settings` (all, or `only` these)."""

    def decorate(command):
        for spec in reversed(option_specs(settings, only)):
            command = click_option(spec)(command)
        return command

    return decorate


def picture_target(path: str) -> Path:
    """Where a picture will be written, checked before any work: a .png or .jpg file in an
    existing folder."""
    target = Path(path)
    if target.suffix.lower() not in {".png", ".jpg", ".jpeg"}:
        raise click.ClickException(f"{target}: write a .png or .jpg file")
    if not target.parent.is_dir():
        raise click.ClickException(f"{target}: no folder {target.parent}")
    return target


def write_picture(target: Path, picture, identifiers: Iterable[str]) -> None:
    """The picture written, unless OCR reads one of the patient's `identifiers` on it."""
    import cv2

    from cass_pipeline.domain.imaging.pixel_text import check_pixels

    problem = check_pixels({target.name: picture}, identifiers).problem()
    if problem is not None:
        raise click.ClickException(f"{target} not written: {problem}")
    if not cv2.imwrite(str(target), picture):
        raise click.ClickException(f"cannot write {target}")
