"""Fact-augmented prompts in a sweep: --llm (a local causal LM) and --docs (BM25 retrieval)."""

from __future__ import annotations

import pandas as pd
import pytest

from t2ibias.core.errors import UserError
from t2ibias.prompts.textgen import build_tiny_causal_lm
from t2ibias.store.rundir import PROMPTS_FILE
from t2ibias.runspec import SweepRequest, prepare_run


def request(**kw) -> SweepRequest:
    return SweepRequest("tiny-random-sd", ["demo"], 1, 0, "tiny-random-clip", "cpu", **kw)


def test_llm_and_docs_add_fai_vk_and_fai_rk_records(tmp_path):
    lm = build_tiny_causal_lm(tmp_path / "lm")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Most registered nurses in the United States are women.")
    spec = prepare_run(tmp_path / "run", request(llm=str(lm), docs=str(docs)))
    prompts = pd.read_parquet(tmp_path / "run" / PROMPTS_FILE)
    counts = prompts["intervention"].value_counts().to_dict()
    assert counts == {"none": 10, "fai_vk": 10, "fai_rk": 10}
    assert prompts["prompt_id"].is_unique
    vk = prompts[prompts["intervention"] == "fai_vk"]
    assert all(t.startswith(("a portrait photo of", "a photo of the face of")) and "from diverse gender and racial groups." in t for t in vk["text"])
    # the same request again asks the LM nothing new (disk cache) and gives the same spec
    assert prepare_run(tmp_path / "run", request(llm=str(lm), docs=str(docs)))["fingerprint"] == spec["fingerprint"]


def test_fact_augmentation_options_are_checked(tmp_path):
    with pytest.raises(UserError, match="--docs.*add --llm"):
        prepare_run(tmp_path / "a", request(docs=str(tmp_path)))
    with pytest.raises(UserError, match="--llm-model"):
        prepare_run(tmp_path / "b", request(llm="http://127.0.0.1:9/v1"))
    with pytest.raises(UserError, match="config.json missing"):
        prepare_run(tmp_path / "c", request(llm=str(tmp_path)))
