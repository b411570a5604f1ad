"""Whether a Restorer's search starts from a learned start, and from which encoder: the one its
settings name, the model's own (cached by `ilo export --encoder`, or shipped), or none. Decided
once, when the Restorer is built, with the solver schedule that follows from it."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from ilo.engine.api.methods import method
from ilo.engine.solver.encoder import LatentEncoder
from ilo.engine.solver.ilo_solver import ILOConfig
from ilo.errors import InputError
from ilo.generators.staged import StagedGenerator


class EncoderSettings(Protocol):
    """What of a RestorerSettings the choice reads (restorer.py imports this module, not the reverse)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]  # a dataclass: `settled` replaces fields
    method: str
    config: ILOConfig | None
    encoder: str | Path | None
    fast: bool
    solver_overrides: dict

    def learned_default(self) -> bool: ...


Settings = TypeVar("Settings", bound=EncoderSettings)


def find_encoder(
    settings: EncoderSettings, model: StagedGenerator, fingerprint: Callable[[], str], quiet: bool
) -> LatentEncoder | None:
    """The encoder the settings name (see RestorerSettings.encoder), or None."""
    from ilo.engine.solver.encoder_cache import model_encoder

    if settings.encoder == "none" or (settings.encoder is None and not settings.learned_default()):
        return None
    if settings.encoder is None or settings.encoder == "auto":  # cached by `ilo export --encoder`, or shipped
        encoder = model_encoder(model, fingerprint())
        if encoder is None and settings.encoder == "auto":
            raise InputError(
                "this model has no encoder yet: train one with `ilo export --model MODEL --encoder` "
                "(cached for later runs), or leave out --encoder"
            )
        if encoder is None and not quiet and not settings.fast:  # once a run (--fast is refused instead)
            print(
                "ilo: note: this model has no encoder, so round 0 searches from random starts (slower than "
                "from a learned start): `ilo export --model MODEL --encoder` trains one, once (cached for "
                "later runs)",
                file=sys.stderr,
            )
        return encoder
    from ilo.engine.solver.encoder_files import load_encoder  # refused here, by name, where not this model's

    return load_encoder(Path(settings.encoder), fingerprint())


def settled(settings: Settings, encoder: LatentEncoder | None) -> Settings:
    """The settings with what they left open decided: the method's schedule (shorter from a
    learned start; None for a single pass) and the encoder. A Ray actor or Serve replica built from the result uses this
    encoder (or refuses where its machine lacks it), never its own choice."""
    row = method(settings.method)
    if settings.config is None:
        config = row.config(encoder is not None, settings.fast, **settings.solver_overrides)
        settings = dataclasses.replace(settings, config=config, solver_overrides={}, fast=False)
    elif not row.optimises:  # a single pass searches nothing: a whole solver config given is moot
        settings = dataclasses.replace(settings, config=None)
    if settings.encoder is None:
        settings = dataclasses.replace(settings, encoder="none" if encoder is None else "auto")
    return settings
