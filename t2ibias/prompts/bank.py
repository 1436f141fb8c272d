"""Prompt-set files (``prompts/<id>.yaml``) and their expansion into prompt records.

A set has families (occupation, trait, ...), each with named templates and subjects. Every
(family, subject, template, intervention) gives one record whose ``prompt_id`` is a hash of
what defines its text, so ids stay stable across releases unless the text changes.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from t2ibias.errors import UserError
from t2ibias.paths import prompts_dir
from t2ibias.registry import Registry
from t2ibias.yamlio import LocatedYAML, load_located_yaml

SET_KEYS = {"id", "version", "description", "provenance", "families"}
FAMILY_KEYS = {"templates", "subjects"}
#: Interventions appended to the base text; the prompt-bank issue adds the fact-augmented ones.
INTERVENTIONS = {"none": ""}
PLACEHOLDERS = {"subject", "article"}


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PromptSet:
    id: str
    version: int
    description: str
    provenance: tuple[str, ...]
    families: dict[str, dict[str, Any]]
    path: Path
    sha256: str

    @property
    def n_subjects(self) -> int:
        return sum(len(f["subjects"]) for f in self.families.values())


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _prompt_id(family: str, subject: str, intervention: str, text: str) -> str:
    return hashlib.sha256(f"{family}\x1f{subject}\x1f{intervention}\x1f{text}".encode()).hexdigest()[:12]


def _check_template(doc: LocatedYAML, family: str, tid: str, text: Any) -> None:
    where = doc.where("families", family, "templates", tid)
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"{where}: template {tid!r} must be a non-empty string")
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise UserError(f"{where}: template {tid!r} is malformed ({exc}); use {{subject}} placeholders") from None
    unknown = names - PLACEHOLDERS
    if unknown:
        raise UserError(
            f"{where}: template {tid!r} uses unknown placeholder {{{sorted(unknown)[0]}}} (allowed: {{subject}}, {{article}})"
        )
    if "subject" not in names:
        raise UserError(f"{where}: template {tid!r} has no {{subject}} placeholder (add one)")


def load_prompt_set(path: str | Path) -> PromptSet:
    """Load and validate one prompt-set file; every problem is reported as ``file:line: ... (fix)``."""
    path = Path(path)
    doc = load_located_yaml(path)
    data = doc.data
    if not isinstance(data, dict):
        raise UserError(f"{doc.where()}: a prompt set must be a mapping with keys {', '.join(sorted(SET_KEYS))}")
    for key in data:
        if key not in SET_KEYS:
            raise UserError(f"{doc.where(key)}: unknown key {key!r} (allowed: {', '.join(sorted(SET_KEYS))})")
    for key in ("id", "version", "families"):
        if key not in data:
            raise UserError(f"{doc.where()}: missing key {key!r} (add `{key}: ...`)")
    if data["id"] != path.stem:
        raise UserError(f"{doc.where('id')}: id {data['id']!r} differs from the file name {path.stem!r} (rename one)")
    if not isinstance(data["version"], int) or data["version"] < 1:
        raise UserError(f"{doc.where('version')}: version must be a positive integer")
    families = data["families"]
    if not isinstance(families, dict) or not families:
        raise UserError(f"{doc.where('families')}: families must be a non-empty mapping of family name → templates, subjects")
    for name, fam in families.items():
        if not isinstance(fam, dict):
            raise UserError(f"{doc.where('families', name)}: family {name!r} must be a mapping with templates and subjects")
        for key in fam:
            if key not in FAMILY_KEYS:
                raise UserError(f"{doc.where('families', name, key)}: unknown key {key!r} (allowed: templates, subjects)")
        templates, subjects = fam.get("templates"), fam.get("subjects")
        if not isinstance(templates, dict) or not templates:
            raise UserError(f"{doc.where('families', name)}: family {name!r} needs a non-empty `templates:` mapping (id: text)")
        for tid, text in templates.items():
            _check_template(doc, name, tid, text)
        if not isinstance(subjects, list) or not subjects:
            raise UserError(f"{doc.where('families', name)}: family {name!r} needs a non-empty `subjects:` list")
        seen: set[str] = set()
        for i, subject in enumerate(subjects):
            if not isinstance(subject, str) or not subject.strip():
                raise UserError(f"{doc.where('families', name, 'subjects', i)}: subject must be a non-empty string")
            if subject in seen:
                raise UserError(f"{doc.where('families', name, 'subjects', i)}: duplicate subject {subject!r} (remove one)")
            seen.add(subject)
    raw = path.read_bytes()
    return PromptSet(
        id=data["id"],
        version=data["version"],
        description=str(data.get("description", "")),
        provenance=tuple(data.get("provenance") or ()),
        families=families,
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def expand(pset: PromptSet, interventions: tuple[str, ...] = ("none",)) -> list[PromptRecord]:
    """All records of a set, in file order: family → subject → template → intervention."""
    records = []
    for family, fam in pset.families.items():
        for subject in fam["subjects"]:
            for tid, template in fam["templates"].items():
                base = template.format(subject=subject, article=_article(subject))
                for intervention in interventions:
                    text = base + INTERVENTIONS[intervention]
                    records.append(
                        PromptRecord(
                            prompt_id=_prompt_id(family, subject, intervention, text),
                            set_id=pset.id,
                            set_version=pset.version,
                            family=family,
                            subject=subject,
                            template_id=tid,
                            intervention=intervention,
                            text=text,
                        )
                    )
    return records


def prompt_sets() -> Registry[PromptSet]:
    """Registry of the sets in the prompt bank folder (file name = id)."""
    reg: Registry[PromptSet] = Registry("prompt set", "t2ibias ls prompts")
    for path in sorted(prompts_dir().glob("*.yaml")):
        reg.register(path.stem, lambda p=path: load_prompt_set(p))
    return reg


def resolve_prompt_set(name: str) -> PromptSet:
    """A set id from the bank, or a path to a set file."""
    path = Path(name).expanduser()
    if path.suffix in (".yaml", ".yml"):
        return load_prompt_set(path)
    return prompt_sets().get(name)
