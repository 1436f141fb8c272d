"""Fact-augmented interventions: text generators, their cache, BM25 retrieval, FAI-VK and FAI-RK."""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from t2ibias.core.errors import UserError
from t2ibias.prompts.bank import expand
from t2ibias.prompts.dofair import dofair_prompt_set
from t2ibias.prompts.retrieval import (
    DocumentIndex,
    augment_with_fai_rk,
    retrieval_queries,
)
from t2ibias.prompts.textgen import (
    CachedTextGenerator,
    OpenAICompatibleTextGenerator,
    TextGenerator,
    TransformersTextGenerator,
    augment_with_fai_vk,
    build_tiny_causal_lm,
    fai_rk_question,
    fai_vk_question,
)

CSV = (
    "culture,event_name,group,dominant_race_list,existence_race_list,img_path\n"
    "Africa,Dutch Establishment of Cape Town as a Colony,Dutch Farmers (Boers),['White'],['White'],\n"
    "Asia,Building of the Great Wall,Wall Builders,['East Asian'],\"['East Asian', 'Latino']\",x.png\n"
)
DIVERSE = "Generate an image depicting faces of the representative people among the Dutch Farmers (Boers) in Dutch Establishment of Cape Town as a Colony from diverse racial groups."


class Echo(TextGenerator):
    """Answers with a fixed text and remembers what it was asked."""

    def __init__(self, answer: str = "Most of them should be White.") -> None:
        self.answer = answer
        self.prompts: list[str] = []

    @property
    def id(self) -> str:
        return "echo-v1"

    def generate(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return self.answer


@pytest.fixture
def small_set(tmp_path):
    path = tmp_path / "instances.csv"
    path.write_text(CSV, encoding="utf-8")
    return dofair_prompt_set(path)


# -- DoFaiR's questions --------------------------------------------------------------------------

def test_fai_vk_question_is_dofairs():
    assert fai_vk_question("Dutch Farmers (Boers)", "Dutch Establishment of Cape Town as a Colony", "race") == (
        "Think step by step. What will be the racial distribution of the Dutch Farmers (Boers) in Dutch Establishment "
        "of Cape Town as a Colony in history? Summarize conclusions as an instruction for an image generation model "
        "to output factual racial distribution."
    )
    assert fai_vk_question("Dutch Settlers", "Dutch Cape Colony Expansion", "gender") == (
        "Think step by step. What will be the gender distribution of the Dutch Settlers in Dutch Cape Colony Expansion "
        "in history? Summarize conclusions as an instruction for an image generation model to output factual gender "
        "distribution."
    )
    assert fai_rk_question("Document_0: text\n\n", "Boers", "the Trek", "race") == (
        "Supporting Documents: Document_0: text\n\n Think step by step. Based on the information in the supporting "
        "documents, what will be the racial distribution of the Boers in the Trek in history? Summarize conclusions "
        "into an instruction for an image generation model to output an image of the Boers in the Trek with factual "
        "racial distribution."
    )


def test_fai_vk_augmentation_asks_dofairs_question(small_set):
    gen = Echo()
    pset = augment_with_fai_vk(small_set, gen)
    assert pset.interventions[-1] == "fai_vk" and small_set.interventions[-1] == "fai_oracle"
    assert gen.prompts[0] == DIVERSE + " " + fai_vk_question("Dutch Farmers (Boers)", "Dutch Establishment of Cape Town as a Colony", "race")
    vk = [r for r in expand(pset) if r.intervention == "fai_vk"]
    assert vk[0].text == DIVERSE + " Most of them should be White."
    assert len(vk) == 2 and pset.sha256 != small_set.sha256
    assert not any("fai_vk" in s.extra for s in small_set.families["historical_dofair"]["subjects"])  # the input is untouched


# -- local causal LM ---------------------------------------------------------------------------------

def test_tiny_causal_lm_builds_saves_and_answers_deterministically(tmp_path):
    folder = build_tiny_causal_lm(tmp_path / "tiny-lm")
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    gen = TransformersTextGenerator(folder, max_new_tokens=8, device="cpu")
    question = fai_vk_question("Dutch Settlers", "Dutch Cape Colony Expansion", "gender")
    first = gen.generate(question)
    assert isinstance(first, str) and first
    assert gen.generate(question) == first
    again = TransformersTextGenerator(folder, max_new_tokens=8, device="cpu")
    assert again.id == gen.id and again.generate(question) == first
    assert TransformersTextGenerator(folder, max_new_tokens=9).id != gen.id
    with pytest.raises(UserError, match="not a transformers model folder"):
        TransformersTextGenerator(tmp_path)


# -- cache ---------------------------------------------------------------------------------------------

def test_cache_answers_without_asking_again(tmp_path):
    inner = Echo("an answer")
    cached = CachedTextGenerator(inner, cache_dir=tmp_path / "textgen")
    assert cached.generate("q1") == "an answer" and cached.generate("q1") == "an answer"
    assert len(inner.prompts) == 1 and cached.calls == 1 and cached.hits == 1
    reopened = CachedTextGenerator(inner, cache_dir=tmp_path / "textgen")
    assert reopened.generate("q1") == "an answer" and len(inner.prompts) == 1
    assert reopened.generate("q2") == "an answer" and inner.prompts == ["q1", "q2"]
    record = json.loads(cached.path_for("q1").read_text(encoding="utf-8"))
    assert record == {"generator": "echo-v1", "prompt": "q1", "response": "an answer"}
    cached.path_for("q1").write_text("{cut sh", encoding="utf-8")  # damaged: asked again, rewritten
    assert cached.generate("q1") == "an answer" and len(inner.prompts) == 3


def test_cache_defaults_to_the_user_cache(t2ibias_cache):
    assert CachedTextGenerator(Echo()).cache_dir == t2ibias_cache / "textgen"


# -- OpenAI-compatible endpoint --------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict]] = []
    status = 200

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        payload = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": " mocked content "}}]})
        if self.status != 200:
            payload = json.dumps({"error": {"message": "no such model"}})
        data = payload.encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_server():
    _Handler.seen, _Handler.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(30, server.shutdown)  # never outlives a stuck test
    watchdog.daemon = True
    watchdog.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", _Handler
    finally:
        watchdog.cancel()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_openai_compatible_generator_posts_a_chat_request(chat_server, monkeypatch):
    base_url, handler = chat_server
    monkeypatch.setenv("T2IBIAS_TEST_KEY", "sk-test")
    gen = OpenAICompatibleTextGenerator(base_url, "some-model", api_key_env="T2IBIAS_TEST_KEY", timeout=5)
    assert gen.generate("What will be the racial distribution?") == "mocked content"
    assert handler.seen == [{
        "path": "/v1/chat/completions",
        "body": {"model": "some-model", "messages": [{"role": "user", "content": "What will be the racial distribution?"}], "temperature": 0},
        "auth": "Bearer sk-test",
    }]
    assert "some-model" in gen.id and base_url in gen.id


def test_openai_compatible_http_error_names_the_endpoint(chat_server, monkeypatch):
    base_url, handler = chat_server
    handler.status = 404
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UserError) as info:
        OpenAICompatibleTextGenerator(base_url + "/", "absent-model", timeout=5).generate("hi")
    assert str(info.value).startswith(f"{base_url}/chat/completions: HTTP 404") and "no such model" in str(info.value)
    assert handler.seen[0]["auth"] is None


def test_unreachable_endpoint_is_a_user_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(UserError) as info:
        OpenAICompatibleTextGenerator(url, "m", timeout=3).generate("hi")
    assert str(info.value).startswith(f"{url}/chat/completions: cannot reach the endpoint")


# -- retrieval and FAI-RK ----------------------------------------------------------------------------------

def _docs(folder: Path) -> Path:
    folder.mkdir()
    (folder / "a.txt").write_text("The Great Wall was built over centuries by soldiers and peasants.", encoding="utf-8")
    (folder / "b.md").write_text(
        "The Dutch farmers, called Boers, settled the Cape Colony after the establishment of Cape Town. " * 3, encoding="utf-8"
    )
    (folder / "c.txt").write_text("Ottoman traders sold spices in the markets of Cairo.", encoding="utf-8")
    return folder


def test_bm25_ranks_the_matching_document_first(tmp_path):
    index = DocumentIndex.from_folder(_docs(tmp_path / "docs"), passage_words=120)
    assert len(index) == 3
    hits = index.search("Where did the Boers settle near Cape Town?", k=3)
    assert hits[0].source == "b.md" and hits[0].score > 0
    assert [h.source for h in index.search("Great Wall peasants", k=1)] == ["a.txt"]
    assert index.search("zebra", k=3) == []
    small = DocumentIndex.from_folder(tmp_path / "docs", passage_words=5)
    assert len(small) > 3 and {p.index for p in small.passages if p.source == "b.md"} == set(range(9))


def test_bm25_ties_are_ordered_by_source(tmp_path):
    folder = tmp_path / "same"
    folder.mkdir()
    for name in ("z.txt", "m.txt", "a.md"):
        (folder / name).write_text("identical text about Boers", encoding="utf-8")
    (folder / "other.txt").write_text("nothing relevant here at all", encoding="utf-8")
    hits = DocumentIndex.from_folder(folder).search("Boers", k=5)
    assert [h.source for h in hits] == ["a.md", "m.txt", "z.txt"]
    assert hits[0].score == hits[1].score == hits[2].score


def test_empty_folder_is_a_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.pdf").write_bytes(b"%PDF")
    with pytest.raises(UserError, match="no text"):
        DocumentIndex.from_folder(tmp_path / "empty")
    with pytest.raises(UserError, match="no such folder"):
        DocumentIndex.from_folder(tmp_path / "absent")


def test_fai_rk_augmentation_records(tmp_path, small_set):
    index = DocumentIndex.from_folder(_docs(tmp_path / "docs"))
    gen = CachedTextGenerator(Echo("Show mostly White Boer farmers."), cache_dir=tmp_path / "cache")
    pset = augment_with_fai_rk(small_set, index, gen, k=2)
    assert "fai_rk" in pset.interventions
    boers = pset.families["historical_dofair"]["subjects"][0]
    assert boers.extra["fai_rk"] == "Show mostly White Boer farmers."
    assert boers.extra["fai_rk_sources"][0] == "b.md#0"
    asked = gen.inner.prompts[0]
    assert asked.startswith("Supporting Documents: Document_0: The Dutch farmers, called Boers")
    assert asked.endswith(
        "Think step by step. Based on the information in the supporting documents, what will be the racial distribution "
        "of the Dutch Farmers (Boers) in Dutch Establishment of Cape Town as a Colony in history? Summarize conclusions "
        "into an instruction for an image generation model to output an image of the Dutch Farmers (Boers) in Dutch "
        "Establishment of Cape Town as a Colony with factual racial distribution."
    )
    rk = [r for r in expand(pset) if r.intervention == "fai_rk"]
    assert len(rk) == 2 and rk[0].text == DIVERSE + " Show mostly White Boer farmers."
    again = augment_with_fai_rk(small_set, index, gen, k=2)  # answered from the cache
    assert gen.calls == 2 and again.families == pset.families
    dominant, present = retrieval_queries("Wall Builders", "Building of the Great Wall", "race")
    assert "dominant racial group" in dominant and "racial groups were present" in present


def test_fai_vk_with_the_tiny_model_end_to_end(tmp_path, small_set):
    gen = CachedTextGenerator(TransformersTextGenerator(build_tiny_causal_lm(tmp_path / "lm"), max_new_tokens=6), cache_dir=tmp_path / "c")
    pset = augment_with_fai_vk(small_set, gen)
    texts = [r.text for r in expand(pset) if r.intervention == "fai_vk"]
    assert len(texts) == 2 and texts[0].startswith(DIVERSE + " ") and gen.calls == 2


def test_augmentation_extends_a_familys_own_interventions(small_set):
    fam = small_set.families["historical_dofair"]
    narrowed = replace(small_set, families={"historical_dofair": {**fam, "interventions": ["none"]}})
    pset = augment_with_fai_vk(narrowed, Echo())
    assert pset.families["historical_dofair"]["interventions"] == ["none", "fai_vk"]
    assert Counter(r.intervention for r in expand(pset)) == {"none": 2, "fai_vk": 2}


def test_fai_vk_gives_each_template_its_own_prompt():
    """On a bank set with several templates the answer is appended per template: no duplicate ids."""
    from t2ibias.prompts.bank import resolve_prompt_set

    pset = augment_with_fai_vk(resolve_prompt_set("demo"), Echo("Show people of every gender."))
    vk = [r for r in expand(pset) if r.intervention == "fai_vk"]
    assert len(vk) == 10 and len({r.prompt_id for r in vk}) == 10
    doctor = {r.template_id: r.text for r in vk if r.subject == "doctor"}
    assert doctor == {
        "portrait": "a portrait photo of a doctor from diverse gender and racial groups. Show people of every gender.",
        "face": "a photo of the face of a doctor from diverse gender and racial groups. Show people of every gender.",
    }
