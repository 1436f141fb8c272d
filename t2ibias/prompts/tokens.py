"""How many tokens each prompt takes in each text encoder of a pipeline, and what gets cut.

CLIP text encoders (SD 1.x/2.x, SDXL, and SD3's two CLIP encoders) read 77 tokens including
the start and end tokens and silently drop the rest, which cuts the instruction off long
diversity and fact-augmented prompts. T5 encoders (SD3's third encoder, FLUX, PixArt) read
hundreds. Counting with each pipeline's own tokenizers tells which prompts lose words where.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from t2ibias.core.errors import UserError
from t2ibias.core.safe_load import first_line, weights_only_loads

TOKENIZER_FOLDERS = ("tokenizer", "tokenizer_2", "tokenizer_3")
COLUMNS = ["prompt_id", "tokenizer", "n_tokens", "max_length", "truncated", "kept_text"]


def count_prompt_tokens(pipeline_folder: str | Path, prompts: pd.DataFrame, long_context_length: int | None = None) -> pd.DataFrame:
    """One row per (prompt, tokenizer): token count (incl. special tokens), the encoder's limit,
    whether the prompt is cut, and the text the encoder actually sees when it is.

    ``long_context_length`` is the pipeline's ``max_sequence_length`` for T5-style tokenizers
    (those whose own limit is above CLIP's 77); pipelines pass it at call time.
    """
    from transformers import AutoTokenizer
    from transformers.utils import logging as tlogging

    tlogging.set_verbosity_error()

    folder = Path(pipeline_folder)
    rows = []
    for sub in TOKENIZER_FOLDERS:
        if not (folder / sub).is_dir():
            continue
        try:
            with weights_only_loads():
                tok = AutoTokenizer.from_pretrained(folder, subfolder=sub, trust_remote_code=False)
        except Exception as exc:  # tokenizer files fail in many ways (JSON, sentencepiece, custom code refused)
            raise UserError(f"{folder / sub}: cannot load the tokenizer ({first_line(exc)}; "
                            "pass a pipeline folder written by save_pretrained)") from None
        limit = tok.model_max_length
        if not isinstance(limit, int) or limit > 100_000:  # tokenizers without a real limit
            limit = 512
        if long_context_length and limit > 77:
            limit = long_context_length
        ids = tok(list(prompts["text"]), add_special_tokens=True, truncation=False)["input_ids"]
        for pid, text, seq in zip(prompts["prompt_id"], prompts["text"], ids):
            cut = len(seq) > limit
            kept = tok.decode(seq[:limit], skip_special_tokens=True) if cut else text
            rows.append({"prompt_id": pid, "tokenizer": sub, "n_tokens": len(seq), "max_length": int(limit),
                         "truncated": cut, "kept_text": kept})
    return pd.DataFrame(rows, columns=COLUMNS)


def truncation_summary(tokens: pd.DataFrame) -> str | None:
    """One line for the user when some prompts are cut, else None."""
    cut = tokens[tokens["truncated"]]
    if cut.empty:
        return None
    parts = [f"{g['prompt_id'].nunique()} by {name} ({int(g['max_length'].iloc[0])} tokens)" for name, g in cut.groupby("tokenizer")]
    return (
        f"{cut['prompt_id'].nunique()} of {tokens['prompt_id'].nunique()} prompts are longer than a text encoder reads "
        f"and will be cut: {'; '.join(parts)} (see prompt_tokens.parquet). Shorten or summarise the instruction, "
        "or use a model with a long-context T5 encoder (sd3-medium, flux-schnell, pixart-sigma)"
    )
