"""What a prompt set is (sets, subjects, the records they expand to) and the registry of
prompt-set schemes such as ``dofair:PATH``, shared by every loader of prompt sets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from t2ibias.core.registry import Registry


@dataclass(frozen=True)
class PromptRecord:
    prompt_id: str
    set_id: str
    set_version: int
    family: str
    subject: str
    template_id: str
    intervention: str
    text: str
    #: Country or region of a geographic variant; None for the location-neutral prompt.
    place: str | None = None
    #: Key of the subject's row in its reference table (e.g. a BLS occupation), or None.
    reference: str | None = None
    reference_table: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Subject:
    subject: str
    reference: str | None = None
    facts: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    note: str = ""
    #: "a" or "an" where the first-letter rule is wrong ("an honest person"); None = the rule.
    article: str | None = None
    #: Computed per subject, not read from YAML: e.g. ``irrespective_who``, ``fai_vk``, ``fai_rk`` texts.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PromptSet:
    id: str
    version: int
    description: str
    provenance: tuple[str, ...]
    families: dict[str, dict[str, Any]]
    path: Path
    sha256: str
    interventions: tuple[str, ...] = ("none",)
    axis: str = "gender_race"

    @property
    def n_subjects(self) -> int:
        return sum(len(f["subjects"]) for f in self.families.values())


def article(word: str) -> str:
    """The English indefinite article by the first-letter rule."""
    return "an" if word[:1].lower() in "aeiou" else "a"



#: ``scheme:ARGUMENT`` names of prompt sets that are not files of the bank (``dofair:PATH``): each
#: entry maps the whole name to a :class:`PromptSet`.
PROMPT_SET_SCHEMES: Registry[Callable[[str], PromptSet]] = Registry("prompt-set scheme")
