"""Measurers by name, for ``t2ibias audit --classifier`` and ``t2ibias measure --also``.

Every measurer has one shape, :class:`Measurer`: ``id``, ``fingerprint()``, ``config()`` and
``measure(crops) -> list[dict[attribute, Prediction]]``. A name is ``KIND`` or ``KIND:ARGUMENT``
of a kind registered in :data:`MEASURERS`; a name of no registered kind is a classifier:

- ``pixel-mst``: Monk skin tone from the skin pixels of a face crop (CIEDE2000 to the swatches);
- ``fairface:PATH`` / ``fairface4:PATH``: a FairFace ResNet-34 checkpoint given by local path:
  the 7-race model (race, gender, age) or the 4-race model (``race4`` only, as FairFace uses it);
- a classifier config id or YAML file (``t2ibias ls classifiers``, or ``clip:ID``): CLIP zero-shot.

A new kind is its own module plus one :func:`register_measurer` builder here that imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from t2ibias.core.errors import UserError
from t2ibias.core.registry import Registry
from t2ibias.models.clip_zeroshot import Prediction

PIXEL_MST = "pixel-mst"
CLIP = "clip"
#: The checkpoint FairFace's predict.py loads for each variant.
FAIRFACE_CHECKPOINTS = {7: "fairface_alldata_20191111.pt", 4: "fairface_alldata_4race_20191111.pt"}


@runtime_checkable
class Measurer(Protocol):
    """Labels crops: one dict attribute → :class:`Prediction` per crop, in order.

    ``fingerprint()`` changes whenever an answer could; ``config()`` is a JSON-ready dict whose
    ``kind`` is the registered kind that builds it.
    """

    id: str

    def fingerprint(self) -> str: ...

    def config(self) -> dict[str, Any]: ...

    def measure(self, crops: list[Any]) -> list[dict[str, Prediction]]: ...


@dataclass(frozen=True)
class MeasurerKind:
    """How a kind of measurer is written and built.

    ``build(argument, device)`` gets the text after ``KIND:`` (None when there is no colon);
    ``usage`` is how the help spells it (None: an alias, not shown); ``face_crops`` says it
    measures face crops and so may run beside the classifier (``t2ibias measure --also``).
    """

    name: str
    build: Callable[[str | None, str], Measurer]
    usage: str | None
    face_crops: bool = True


#: Measurer kinds by name.
MEASURERS: Registry[MeasurerKind] = Registry("measurer")


def register_measurer(name: str, usage: str | None, *, face_crops: bool = True
                      ) -> Callable[[Callable[[str | None, str], Measurer]], Callable[[str | None, str], Measurer]]:
    """Register the decorated ``build(argument, device)`` as the measurer kind ``name``."""

    def add(build: Callable[[str | None, str], Measurer]) -> Callable[[str | None, str], Measurer]:
        MEASURERS.entry(name)(MeasurerKind(name, build, usage, face_crops))
        return build

    return add


def _usages(face_crops_only: bool) -> list[str]:
    kinds = [MEASURERS.get(n) for n in MEASURERS]
    return [k.usage for k in kinds if k.usage and (k.face_crops or not face_crops_only)]


def _one_of(usages: list[str]) -> str:
    return ", ".join(usages[:-1]) + " or " + usages[-1] if len(usages) > 1 else "".join(usages)


def crop_measurers_help() -> str:
    """How the registered face-crop measurers are written, for help and error messages."""
    return _one_of(_usages(face_crops_only=True))


@register_measurer(PIXEL_MST, PIXEL_MST)
def _pixel_mst(argument: str | None, device: str) -> Measurer:
    """Monk skin tone from a face crop's skin pixels (no weights; ``device`` is not used)."""
    if argument is not None:
        raise UserError(f"measurer '{PIXEL_MST}:{argument}': {PIXEL_MST} takes no argument (write {PIXEL_MST})")
    from t2ibias.measure.skin_tone import PixelSkinTone

    return PixelSkinTone()


def _fairface(prefix: str, variant: int) -> Callable[[str | None, str], Measurer]:
    def build(argument: str | None, device: str) -> Measurer:
        if not argument:
            raise UserError(f"measurer {prefix + ':' if argument is not None else prefix!r}: no checkpoint path "
                            f"(write {prefix}:PATH/TO/{FAIRFACE_CHECKPOINTS[variant]})")
        from t2ibias.measure.fairface import FairFaceResNet34

        return FairFaceResNet34(Path(argument).expanduser(), variant=variant, device=device)

    build.__doc__ = f"FairFace's {variant}-race ResNet-34 from a local checkpoint."
    return build


register_measurer("fairface", "fairface:PATH")(_fairface("fairface", 7))
register_measurer("fairface7", None)(_fairface("fairface7", 7))
register_measurer("fairface4", "fairface4:PATH")(_fairface("fairface4", 4))


@register_measurer(CLIP, "a classifier id or YAML file", face_crops=False)
def _clip(argument: str | None, device: str) -> Measurer:
    """A CLIP zero-shot classifier config (``t2ibias ls classifiers``) or YAML file."""
    from t2ibias.models.classifier_spec import resolve_classifier_spec
    from t2ibias.models.clip_zeroshot import CLIPAttributeClassifier

    if not argument:
        raise UserError(f"measurer {CLIP!r}: no classifier (write {CLIP}:ID or the classifier id alone)")
    return CLIPAttributeClassifier(resolve_classifier_spec(argument), device)


def measurer_kind(name: str) -> tuple[MeasurerKind, str | None]:
    """The registered kind a measurer name is of, and its argument; a name of no kind is a classifier."""
    text = name.strip()
    prefix, sep, argument = text.partition(":")
    if prefix in MEASURERS:
        return MEASURERS.get(prefix), argument if sep else None
    return MEASURERS.get(CLIP), text


def resolve_measurer(name: str, device: str = "cpu") -> Measurer:
    """Any measurer by name (see the module doc): a face-crop measurer or a CLIP classifier."""
    kind, argument = measurer_kind(name)
    return kind.build(argument, device)


def resolve_crop_measurer(name: str, device: str = "cpu") -> Measurer:
    """A face-crop measurer by name (``pixel-mst``, ``fairface[4]:PATH``); UserError for anything else."""
    kind, argument = measurer_kind(name)
    if not kind.face_crops:
        raise UserError(f"measurer {name.strip()!r}: unknown (use {crop_measurers_help()})")
    return kind.build(argument, device)


CROP_MEASURERS_HELP = crop_measurers_help()
