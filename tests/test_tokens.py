"""Token counting with each pipeline's own tokenizers, and the truncation warning of a sweep."""

from __future__ import annotations

import pandas as pd

from t2ibias.models.tiny import tiny_model_dir
from t2ibias.prompts.tokens import count_prompt_tokens, truncation_summary
from t2ibias.store.rundir import TOKENS_FILE
from t2ibias.runspec import SweepRequest, prepare_run

LONG = "a photo of the face of a nurse " + "who works nights in a large city hospital " * 12


def test_counts_every_tokenizer_of_the_pipeline_and_flags_cut_prompts():
    prompts = pd.DataFrame({"prompt_id": ["short", "long"], "text": ["a photo of a nurse", LONG]})
    tokens = count_prompt_tokens(tiny_model_dir("tiny-random-sdxl"), prompts)
    assert sorted(tokens["tokenizer"].unique()) == ["tokenizer", "tokenizer_2"]  # SDXL has two CLIP tokenizers
    short = tokens[tokens["prompt_id"] == "short"].iloc[0]
    assert 7 <= short["n_tokens"] < 20 and not short["truncated"]  # start + at least 5 word pieces + end
    long = tokens[tokens["prompt_id"] == "long"]
    assert long["truncated"].all() and (long["max_length"] == 77).all() and (long["n_tokens"] > 77).all()
    kept = long.iloc[0]["kept_text"]
    assert LONG.startswith(kept[:40]) and len(kept) < len(LONG)  # what the encoder really reads
    message = truncation_summary(tokens)
    assert message.startswith("1 of 2 prompts") and "77 tokens" in message and "T5" in message
    assert truncation_summary(tokens[tokens["prompt_id"] == "short"]) is None


def test_a_long_context_limit_applies_only_to_t5_style_tokenizers():
    prompts = pd.DataFrame({"prompt_id": ["long"], "text": [LONG]})
    tokens = count_prompt_tokens(tiny_model_dir("tiny-random-sd"), prompts, long_context_length=256)
    assert (tokens["max_length"] == 77).all() and tokens["truncated"].all()  # CLIP stays at 77


def test_sweep_writes_token_counts_and_warns_about_cut_prompts(tmp_path):
    pset = tmp_path / "longset.yaml"
    pset.write_text(
        "id: longset\nversion: 1\nfamilies:\n  occupation:\n    templates:\n"
        f"      short: 'a photo of {{article}} {{subject}}'\n      long: '{LONG.replace('nurse', '{subject}')}'\n"
        "    subjects: [nurse]\n"
    )
    spec = prepare_run(tmp_path / "run", SweepRequest("tiny-random-sd", [str(pset)], 1, 0, "tiny-random-clip", "cpu"))
    tokens = pd.read_parquet(tmp_path / "run" / TOKENS_FILE)
    assert len(tokens) == 2 and tokens["truncated"].sum() == 1
    assert spec["prompt_truncation"].startswith("1 of 2 prompts")
