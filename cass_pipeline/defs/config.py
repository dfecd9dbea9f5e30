"""Dagster config classes generated from the domain's settings dataclasses, so the UI's
fields, defaults, help and choices are the domain's own (`domain.options`)."""

from dataclasses import fields
from typing import Any

import dagster as dg
from pydantic import Field, create_model

from cass_pipeline.domain.options import option_specs


def config_fields(
    settings: type,
    only: tuple[str, ...] | None = None,
    rename: dict[str, str] | None = None,
    defaults: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Pydantic fields for `settings`' fields (all, or `only` these; one without a default is
    required); `rename` gives a field another config name and `defaults` another default
    (the asset's own, stated where the config is built)."""
    rename, defaults = rename or {}, defaults or {}
    built = {}
    for spec in option_specs(settings, only):
        limits = {"ge": spec.min} if spec.min is not None else {}
        default = defaults.get(spec.name, ... if spec.required else spec.default)
        built[rename.get(spec.name, spec.name)] = (
            spec.type,
            Field(default=default, description=spec.help, **limits),
        )
    return built


def settings_from(config: dg.Config, settings: type, rename: dict[str, str] | None = None):
    """The domain settings that a generated config holds (its other fields left out)."""
    values, rename = config.model_dump(), rename or {}
    return settings(**{f.name: values[rename.get(f.name, f.name)] for f in fields(settings)})


def config_class(name: str, base: type[dg.Config], doc: str, **fields: Any) -> type[dg.Config]:
    """A `dg.Config` subclass of `base` (which carries its methods) with `fields`."""
    return create_model(name, __base__=base, __doc__=doc, __module__=base.__module__, **fields)
