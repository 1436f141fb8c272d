"""Fact-augmented interventions (DoFaiR's fai_vk and fai_rk) added to prompt sets."""

from __future__ import annotations

from t2ibias.core.errors import UserError
from t2ibias.prompts.types import PromptSet


def fact_augment(sets: list[PromptSet], llm: str | None, llm_model: str | None = None,
                 docs: str | None = None) -> list[PromptSet]:
    """Add fai_vk (and fai_rk over ``docs``) records made by the text generator ``llm`` (a URL or a
    folder); answers are cached."""
    if docs and not llm:
        raise UserError("--docs: retrieval-augmented prompts need a text generator too (add --llm)")
    if not llm:
        return sets
    from t2ibias.prompts.textgen import augment_with_fai_vk, create_text_generator

    textgen = create_text_generator(llm, llm_model)
    sets = [augment_with_fai_vk(s, textgen) for s in sets]
    if docs:
        from t2ibias.prompts.retrieval import DocumentIndex, augment_with_fai_rk

        index = DocumentIndex.from_folder(docs)
        sets = [augment_with_fai_rk(s, index, textgen) for s in sets]
    return sets
