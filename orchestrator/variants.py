"""The tone library's catalogue: which variants exist, the principle each applies, the evidence behind it,
the kinds it is written for, and which language falls back to which.

The catalogue is ``templates/messages/variants.toml``, beside the templates it describes, so that a new
variant is one catalogue entry plus one tone module per language. It is validated when it is loaded: a
variant without evidence, or a language that falls back to an unknown language or in a circle, is an error
that names the entry.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "CONTROL_VARIANT",
    "PRINCIPLES",
    "Catalogue",
    "CatalogueError",
    "LanguageSpec",
    "VariantSpec",
    "load_catalogue",
]

CONTROL_VARIANT: Final = "neutral"
Principle = Literal[
    "neutral",
    "personalisation",
    "simplicity",
    "truthful_consequences",
    "social_norm",
    "loss_framing",
    "reciprocity",
    "commitment",
    "commission_framing",
]
PRINCIPLES: Final = Principle.__args__  # type: ignore[attr-defined]
_Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=60)]


class CatalogueError(ValueError):
    """The catalogue file is missing or invalid; the message names the file and the entry."""


class LanguageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    # Where a message missing in this language is taken from; the rendered message records the fallback.
    fallback: _Name | None = None


class VariantSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    principle: Principle
    summary: Annotated[str, Field(min_length=10)]
    evidence: Annotated[list[Annotated[str, Field(min_length=10)]], Field(min_length=1)]
    # The kinds this variant is written for; "all" for every kind.
    kinds: list[_Name] | Literal["all"]

    def applies_to(self, kind: str) -> bool:
        return self.kinds == "all" or kind in self.kinds


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: str
    languages: dict[_Name, LanguageSpec]
    variants: dict[_Name, VariantSpec]

    @model_validator(mode="after")
    def _consistent(self) -> Catalogue:
        if CONTROL_VARIANT not in self.variants:
            raise ValueError(f"the control variant {CONTROL_VARIANT!r} must be in the catalogue")
        if self.variants[CONTROL_VARIANT].kinds != "all":
            raise ValueError(f"the control variant {CONTROL_VARIANT!r} must apply to all kinds")
        for code, language in self.languages.items():
            seen = [code]
            step = language.fallback
            while step is not None:
                if step not in self.languages:
                    raise ValueError(f"language {code!r} falls back to unknown language {step!r}")
                if step in seen:
                    raise ValueError(f"language fallback runs in a circle: {' -> '.join([*seen, step])}")
                seen.append(step)
                step = self.languages[step].fallback
        return self

    def fallback_chain(self, language: str) -> list[str]:
        """``language`` first, then each fallback in turn (an unknown language has no fallback)."""
        chain = [language]
        spec = self.languages.get(language)
        while spec is not None and spec.fallback is not None:
            chain.append(spec.fallback)
            spec = self.languages.get(spec.fallback)
        return chain

    def variants_for(self, kind: str) -> list[str]:
        """The variants written for ``kind``, the control first."""
        names = [name for name, spec in self.variants.items() if spec.applies_to(kind)]
        return sorted(names, key=lambda name: (name != CONTROL_VARIANT, name))

    def as_json(self) -> dict[str, object]:
        return self.model_dump(mode="json")


def load_catalogue(path: Path) -> Catalogue:
    try:
        raw: Mapping[str, object] = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogueError(f"{path}: the variant catalogue is missing") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return Catalogue.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(top)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise CatalogueError(f"{path}: {problems}") from exc
