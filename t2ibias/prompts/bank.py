"""Prompt-set files (``prompts/<id>.yaml``) and their expansion into prompt records.

A set has families (occupation, trait, ...), each with named templates and subjects. Every
(family, subject, template, intervention) gives one record whose ``prompt_id`` is a hash of
what defines its text, so ids stay stable across releases unless the text changes.
"""

from __future__ import annotations

import hashlib
import string
from pathlib import Path
from typing import Any

from t2ibias.core.errors import UserError
from t2ibias.core.paths import prompts_dir
from t2ibias.prompts.interventions import AXES, INTERVENTIONS, SubjectContext
from t2ibias.core.registry import Registry, did_you_mean
from t2ibias.core.yamlio import LocatedYAML, load_located_yaml
from t2ibias.prompts import dofair  # noqa: F401 (registers the dofair: scheme)
from t2ibias.prompts.types import PROMPT_SET_SCHEMES, PromptRecord, PromptSet, Subject, article

SET_KEYS = {"id", "version", "description", "provenance", "families", "interventions", "axis"}
FAMILY_KEYS = {"templates", "subjects", "places", "reference_table", "axis", "interventions"}
SUBJECT_KEYS = {"subject", "reference", "facts", "sources", "note", "article"}
PLACEHOLDERS = {"subject", "article", "in_place"}


def _prompt_id(family: str, subject: str, intervention: str, text: str) -> str:
    return hashlib.sha256(f"{family}\x1f{subject}\x1f{intervention}\x1f{text}".encode()).hexdigest()[:12]


def _check_template(doc: LocatedYAML, family: str, tid: str, text: Any) -> None:
    where = doc.where("families", family, "templates", tid)
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"{where}: template {tid!r} must be a non-empty string")
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:
        raise UserError(f"{where}: template {tid!r} is malformed ({exc}); use {{subject}} placeholders") from None
    for name, spec, conv in fields:
        # a format spec or conversion would let a template pad a prompt to gigabytes ({subject:>2000000000})
        if spec or conv:
            shown = f"{{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}"
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise UserError(
                f"{where}: template {tid!r}: placeholder {shown} has a format spec or conversion "
                f"(write a bare {{{name or 'subject'}}})"
            )
    names = {name for name, _, _ in fields}
    unknown = names - PLACEHOLDERS
    if unknown:
        raise UserError(
            f"{where}: template {tid!r} uses unknown placeholder {{{sorted(unknown)[0]}}} "
            "(allowed: {subject}, {article}, {in_place})"
        )
    if "subject" not in names:
        raise UserError(f"{where}: template {tid!r} has no {{subject}} placeholder (add one)")


def _check_subject(doc: LocatedYAML, family: str, i: int, raw: Any) -> Subject:
    where = doc.where("families", family, "subjects", i)
    if isinstance(raw, str):
        raw = {"subject": raw}
    if not isinstance(raw, dict):
        raise UserError(f"{where}: a subject is a string or a mapping with `subject:` (and reference, facts, sources, note)")
    for key in raw:
        if key not in SUBJECT_KEYS:
            raise UserError(f"{doc.where('families', family, 'subjects', i, key)}: unknown key {key!r} (allowed: {', '.join(sorted(SUBJECT_KEYS))})")
    name = raw.get("subject")
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{where}: subject must be a non-empty string")
    facts = raw.get("facts") or {}
    if not isinstance(facts, dict) or any(
        axis not in ("gender", "race") or not isinstance(f, dict) or set(f) - {"dominant", "present"} for axis, f in facts.items()
    ):
        raise UserError(f"{doc.where('families', family, 'subjects', i, 'facts')}: facts map gender/race to {{dominant: [...], present: [...]}}")
    article = raw.get("article")
    if article not in (None, "a", "an"):
        raise UserError(f"{doc.where('families', family, 'subjects', i, 'article')}: article must be 'a' or 'an'")
    return Subject(
        subject=name,
        article=article,
        reference=None if raw.get("reference") is None else str(raw["reference"]),
        facts={a: {k: list(v) for k, v in f.items()} for a, f in facts.items()},
        sources=tuple(raw.get("sources") or ()),
        note=str(raw.get("note") or ""),
    )


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
    families = dict(data["families"]) if isinstance(data["families"], dict) else data["families"]
    if not isinstance(families, dict) or not families:
        raise UserError(f"{doc.where('families')}: families must be a non-empty mapping of family name → templates, subjects")
    for name, fam in families.items():
        if not isinstance(fam, dict):
            raise UserError(f"{doc.where('families', name)}: family {name!r} must be a mapping with templates and subjects")
        for key in fam:
            if key not in FAMILY_KEYS:
                raise UserError(f"{doc.where('families', name, key)}: unknown key {key!r} (allowed: {', '.join(sorted(FAMILY_KEYS))})")
        places = fam.get("places") or []
        if not isinstance(places, list) or not all(isinstance(p, str) and p.strip() for p in places) or len(set(places)) != len(places):
            raise UserError(f"{doc.where('families', name, 'places')}: places must be a list of distinct place names")
        if places and not any("in_place" in str(t) for t in (fam.get("templates") or {}).values()):
            raise UserError(f"{doc.where('families', name, 'places')}: family {name!r} has places but no template uses {{in_place}} (add it)")
        fam_interventions = fam.get("interventions")
        if fam_interventions is not None and (
            not isinstance(fam_interventions, list) or not fam_interventions or any(i not in INTERVENTIONS for i in fam_interventions)
        ):
            raise UserError(
                f"{doc.where('families', name, 'interventions')}: interventions must be a non-empty list of {', '.join(INTERVENTIONS)}"
            )
        if fam.get("axis", data.get("axis", "gender_race")) not in AXES:
            raise UserError(f"{doc.where('families', name, 'axis')}: axis must be one of {', '.join(AXES)}")
        templates, subjects = fam.get("templates"), fam.get("subjects")
        if not isinstance(templates, dict) or not templates:
            raise UserError(f"{doc.where('families', name)}: family {name!r} needs a non-empty `templates:` mapping (id: text)")
        for tid, text in templates.items():
            _check_template(doc, name, tid, text)
        if not isinstance(subjects, list) or not subjects:
            raise UserError(f"{doc.where('families', name)}: family {name!r} needs a non-empty `subjects:` list")
        seen: set[str] = set()
        parsed = []
        for i, raw in enumerate(subjects):
            subject = _check_subject(doc, name, i, raw)
            if subject.subject in seen:
                raise UserError(f"{doc.where('families', name, 'subjects', i)}: duplicate subject {subject.subject!r} (remove one)")
            seen.add(subject.subject)
            parsed.append(subject)
        families[name] = {**fam, "subjects": parsed, "places": places}
    interventions = data.get("interventions", ["none"])
    if not isinstance(interventions, list) or not interventions:
        raise UserError(f"{doc.where('interventions')}: interventions must be a non-empty list (e.g. [none, diversity_diverse])")
    for i, name in enumerate(interventions):
        if name not in INTERVENTIONS:
            raise UserError(f"{doc.where('interventions', i)}: unknown intervention {name!r} ({did_you_mean(str(name), list(INTERVENTIONS))})")
    if data.get("axis", "gender_race") not in AXES:
        raise UserError(f"{doc.where('axis')}: axis must be one of {', '.join(AXES)}")
    raw = path.read_bytes()
    return PromptSet(
        id=data["id"],
        version=data["version"],
        description=str(data.get("description", "")),
        provenance=tuple(data.get("provenance") or ()),
        families=families,
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        interventions=tuple(interventions),
        axis=str(data.get("axis", "gender_race")),
    )


def expand(pset: PromptSet, interventions: tuple[str, ...] | None = None) -> list[PromptRecord]:
    """All records of a set, in file order: family → subject → place → template → intervention.

    Each subject gets its location-neutral prompt and one per place of its family. An
    intervention that does not apply to a subject (``fai_oracle`` without gold facts) adds no record.
    """
    records = []
    for family, fam in pset.families.items():
        axis = fam.get("axis", pset.axis)
        for subj in fam["subjects"]:
            ctx = SubjectContext(subj.subject, subj.article or article(subj.subject), axis, subj.facts, subj.extra)
            for place in [None, *fam.get("places", [])]:
                for tid, template in fam["templates"].items():
                    if place is not None and "in_place" not in template:
                        continue
                    base = template.format(subject=subj.subject, article=ctx.article, in_place=f" in {place}" if place else "")
                    for intervention in interventions or fam.get("interventions") or pset.interventions:
                        text = INTERVENTIONS[intervention](base, ctx)
                        if text is None:
                            continue
                        records.append(
                            PromptRecord(
                                prompt_id=_prompt_id(family, subj.subject, intervention, text),
                                set_id=pset.id,
                                set_version=pset.version,
                                family=family,
                                subject=subj.subject,
                                template_id=tid,
                                intervention=intervention,
                                text=text,
                                place=place,
                                reference=subj.reference,
                                reference_table=fam.get("reference_table"),
                            )
                        )
    return records


def prompt_sets() -> Registry[PromptSet]:
    """Registry of the sets in the prompt bank folder (file name = id)."""
    return Registry.from_folder("prompt set", "t2ibias ls prompts", prompts_dir(), load_prompt_set)


def resolve_prompt_set(name: str) -> PromptSet:
    """A set id from the bank, a path to a set file, or ``SCHEME:ARGUMENT`` of a registered
    prompt-set scheme (``dofair:PATH[,fai_vk=PATH2]``: a DoFaiR CSV)."""
    scheme, sep, _ = name.partition(":")
    if sep and scheme in PROMPT_SET_SCHEMES:
        return PROMPT_SET_SCHEMES.get(scheme)(name)
    path = Path(name).expanduser()
    if path.suffix in (".yaml", ".yml"):
        return load_prompt_set(path)
    return prompt_sets().get(name)


def prompt_set_problems(pset: PromptSet) -> list[str]:
    """Problems that schema checks cannot see, one ``file:line: what (fix)`` each: templates that
    give the same prompt twice, and reference keys missing from their reference table."""
    doc = load_located_yaml(pset.path)
    problems = []
    first: dict[str, PromptRecord] = {}
    for rec in expand(pset):
        other = first.setdefault(rec.prompt_id, rec)
        if other is not rec:
            where = doc.where("families", rec.family, "templates", rec.template_id)
            problems.append(
                f"{where}: template {rec.template_id!r} gives the same prompt as {other.template_id!r} "
                f"for {rec.subject!r} ({rec.text!r}); make the templates differ"
            )
    if any(fam.get("reference_table") for fam in pset.families.values()):
        from t2ibias.prompts.references import check_references

        problems += check_references(pset)
    return problems
