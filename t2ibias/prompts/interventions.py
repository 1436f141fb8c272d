"""Interventions: ways of rewriting a base prompt, recorded on every prompt record.

- ``none``: the base prompt.
- ``diversity_irrespective``: ENTIGEN's ethical intervention as used by DoFaiR (form 1):
  ``<base without final ".">, if all individuals can be <a subject> irrespective of their <axis>.``
- ``diversity_diverse``: DoFaiR form 2: ``<base> from diverse <axis> groups.``
- ``fai_oracle``: the subject's gold facts rendered into an instruction (an upper bound for
  fact-augmented interventions); subjects without facts get no record.
- ``fai_vk`` / ``fai_rk``: fact-augmented prompts whose text was computed before expansion
  (verbalized knowledge from an LLM, or retrieved documents summarised by one) and stored in the
  subject's ``extra``; subjects without one get no record.

Wordings by axis follow DoFaiR (Wan et al., EMNLP 2024): "genders" / "skin color or races".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

AXES = ("gender", "race", "gender_race")
_IRRESPECTIVE = {"gender": "their genders", "race": "their skin color or races", "gender_race": "their genders, skin color or races"}
_DIVERSE = {"gender": "diverse gender groups", "race": "diverse racial groups", "gender_race": "diverse gender and racial groups"}


@dataclass(frozen=True)
class SubjectContext:
    """What an intervention may use about the subject of a prompt."""

    subject: str
    article: str
    axis: str = "gender_race"
    #: Gold facts per axis: {"race": {"dominant": [...], "present": [...]}}.
    facts: Mapping[str, Mapping[str, list[str]]] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)


Intervention = Callable[[str, SubjectContext], "str | None"]


def _strip_period(text: str) -> str:
    return text.rstrip().rstrip(".")


def _none(base: str, ctx: SubjectContext) -> str:
    return base


def _irrespective(base: str, ctx: SubjectContext) -> str:
    who = ctx.extra.get("irrespective_who") or f"{ctx.article} {ctx.subject}"  # DoFaiR: "a {group}"
    return f"{_strip_period(base)}, if all individuals can be {who} irrespective of {_IRRESPECTIVE[ctx.axis]}."


def _diverse(base: str, ctx: SubjectContext) -> str:
    return f"{_strip_period(base)} from {_DIVERSE[ctx.axis]}."


#: How labels read inside a sentence.
DISPLAY = {"Latino_Hispanic": "Latino or Hispanic", "male": "men", "female": "women"}


def _join(items: list[str]) -> str:
    items = [DISPLAY.get(i, i) for i in items]
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def render_facts(facts: Mapping[str, Mapping[str, list[str]]], axes: tuple[str, ...]) -> str | None:
    """Gold facts as an instruction, e.g. "Most of them were White; Black and Indian people were also present." """
    parts = []
    for axis in axes:
        f = facts.get(axis)
        if not f:
            continue
        dominant = list(f.get("dominant") or [])
        others = [g for g in f.get("present") or [] if g not in dominant]
        if len(dominant) > 1 and axis == "gender":
            sentence = f"They were both {_join(dominant)}"
        else:
            sentence = f"Most of them were {_join(dominant)}" if dominant else ""
        if others:
            tail = "were also present" if axis == "gender" else "people were also present"
            sentence += ("; " if sentence else "") + f"{_join(others)} {tail}"
        if sentence:
            parts.append(sentence + ".")
    return " ".join(parts) or None


def _oracle(base: str, ctx: SubjectContext) -> str | None:
    axes = ("gender", "race") if ctx.axis == "gender_race" else (ctx.axis,)
    facts = render_facts(ctx.facts, axes)
    if facts is None:
        return None
    return f"{_strip_period(base)}. {facts}"


def _from_extra(name: str) -> Intervention:
    """A fact-augmented intervention (DoFaiR's FAI): the diversity-2 prompt followed by an
    instruction computed beforehand into ``ctx.extra[name]`` (an LLM's answer, alone or over
    retrieved documents), so every template of a subject gets its own prompt. A complete prompt
    fixed by a release goes in ``ctx.extra[name + "_prompt"]`` and is used as is. Subjects with
    neither get no record."""

    def apply(base: str, ctx: SubjectContext) -> str | None:
        fixed = ctx.extra.get(f"{name}_prompt")
        if fixed:
            return str(fixed)
        instruction = str(ctx.extra.get(name) or "").strip()
        return f"{_diverse(base, ctx)} {instruction}" if instruction else None

    return apply


INTERVENTIONS: dict[str, Intervention] = {
    "none": _none,
    "diversity_irrespective": _irrespective,
    "diversity_diverse": _diverse,
    "fai_oracle": _oracle,
    "fai_vk": _from_extra("fai_vk"),
    "fai_rk": _from_extra("fai_rk"),
}
