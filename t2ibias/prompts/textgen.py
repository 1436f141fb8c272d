"""Text generators for fact-augmented interventions (DoFaiR's FAI-VK and FAI-RK).

A :class:`TextGenerator` has an ``id`` (what determines its answers) and ``generate(prompt)``.
Implementations: a local causal LM (:class:`TransformersTextGenerator`), any OpenAI-compatible
chat endpoint (:class:`OpenAICompatibleTextGenerator`), and :class:`CachedTextGenerator`, which
keeps every answer on disk so that a sweep never asks the same question twice.

FAI-VK (verbalized knowledge), as in DoFaiR's release: the model is asked
``<diversity-2 prompt> Think step by step. What will be the racial distribution of the {group}
in {event} in history? Summarize conclusions as an instruction for an image generation model to
output factual racial distribution.`` and the T2I prompt is ``<diversity-2 prompt> <answer>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from t2ibias.core.errors import UserError
from t2ibias.core.fingerprint import fingerprint
from t2ibias.core.paths import cache_dir as user_cache_dir
from t2ibias.prompts.types import PromptSet, Subject, article
from t2ibias.prompts.interventions import INTERVENTIONS, SubjectContext
from t2ibias.core.safe_load import first_line, refuse_code_in_folder, weights_only_loads
from t2ibias.core.files import atomic_write_text

COT = "Think step by step."
_DISTRIBUTION = {"race": "racial distribution", "gender": "gender distribution", "gender_race": "gender and racial distribution"}


# -- DoFaiR's questions --------------------------------------------------------------------------

def _who(group: str, event: str | None) -> str:
    return f"the {group} in {event}" if event else f"the {group}"


def fai_vk_question(group: str, event: str | None, axis: str) -> str:
    """DoFaiR's FAI-VK question (``Think step by step.`` first); ``event=None`` drops ``in {event}``."""
    d = _DISTRIBUTION[axis]
    return (
        f"{COT} What will be the {d} of {_who(group, event)} in history? "
        f"Summarize conclusions as an instruction for an image generation model to output factual {d}."
    )


def fai_rk_question(docs: str, group: str, event: str | None, axis: str) -> str:
    """DoFaiR's FAI-RK question as released: ``Supporting Documents: {docs}`` then the
    step-by-step question, worded "Based on the information in the supporting documents, ..."."""
    d = _DISTRIBUTION[axis]
    who = _who(group, event)
    return (
        f"Supporting Documents: {docs} {COT} Based on the information in the supporting documents, "
        f"what will be the {d} of {who} in history? Summarize conclusions into an instruction for an "
        f"image generation model to output an image of {who} with factual {d}."
    )


# -- generators ----------------------------------------------------------------------------------

class TextGenerator(ABC):
    """Answers a prompt with text. ``id`` must change whenever the answers could change."""

    @property
    @abstractmethod
    def id(self) -> str: ...

    @abstractmethod
    def generate(self, prompt: str) -> str: ...


def _partial_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's size, first and last MiB: cheap for multi-GB weights, and it changes
    with any retraining (the tensors at both ends change)."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(chunk))
        if size > 2 * chunk:
            fh.seek(size - chunk)
            digest.update(fh.read(chunk))
        elif size > chunk:
            digest.update(fh.read())
    return digest.hexdigest()


class TransformersTextGenerator(TextGenerator):
    """A local causal LM (a folder saved by ``save_pretrained``), greedy decoding.

    A tokenizer with a chat template gets the prompt as one user message. Prompts longer than
    the model's context minus ``max_new_tokens`` keep their end (where the question is).
    """

    def __init__(self, path: str | Path, max_new_tokens: int = 512, device: str | None = None) -> None:
        self.path = Path(path).expanduser()
        if not (self.path / "config.json").is_file():
            raise UserError(f"{self.path}: not a transformers model folder (no config.json; pass a folder saved by save_pretrained)")
        if max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be at least 1, not {max_new_tokens}")
        self.max_new_tokens = max_new_tokens
        self._device = device
        self._model: Any = None
        self._tokenizer: Any = None
        self._id: str | None = None

    @property
    def id(self) -> str:
        if self._id is None:
            files = {}
            for f in sorted(self.path.iterdir()):
                if f.is_file() and not f.name.startswith("."):
                    files[f.name] = _partial_sha256(f)
            self._id = f"transformers:{self.path.name}:{fingerprint(files)}:greedy:max_new_tokens={self.max_new_tokens}"
        return self._id

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            with weights_only_loads():  # .bin weights: tensors only; code in the folder is never run
                self._tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=False)
                self._model = AutoModelForCausalLM.from_pretrained(self.path, trust_remote_code=False).to(device).eval()
        except (OSError, ValueError, KeyError, pickle.UnpicklingError) as exc:
            refuse_code_in_folder(self.path, str(self.path))
            raise UserError(f"{self.path}: cannot load the text model ({first_line(exc)}; pass a folder saved by save_pretrained)") from None
        self._device = device

    def generate(self, prompt: str) -> str:
        import torch

        self._load()
        tok, model = self._tokenizer, self._model
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
            ids = tok(text, return_tensors="pt", add_special_tokens=False, verbose=False)["input_ids"]
        else:
            ids = tok(prompt, return_tensors="pt", verbose=False)["input_ids"]
        context = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
        new_tokens = self.max_new_tokens
        if context:
            new_tokens = min(new_tokens, max(1, context // 2))
            ids = ids[:, -(context - new_tokens):]
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids.to(self._device),
                attention_mask=torch.ones_like(ids).to(self._device),
                max_new_tokens=new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=pad,
            )
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


class OpenAICompatibleTextGenerator(TextGenerator):
    """``POST {base_url}/chat/completions`` with one user message, temperature 0.

    The key is read from the environment variable ``api_key_env`` when set (local servers such
    as vLLM or llama.cpp need none).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 120.0,
        max_tokens: int | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_tokens = max_tokens

    @property
    def id(self) -> str:
        limit = f":max_tokens={self.max_tokens}" if self.max_tokens else ""
        return f"openai-compatible:{self.base_url}:{self.model}:temperature=0{limit}"

    def body(self, prompt: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0}
        if self.max_tokens:
            body["max_tokens"] = self.max_tokens
        return body

    def generate(self, prompt: str) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=json.dumps(self.body(prompt)).encode("utf-8"), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = " ".join(exc.read(300).decode("utf-8", "replace").split())
            raise UserError(
                f"{self.url}: HTTP {exc.code} {exc.reason}: {detail} (check the model name {self.model!r} and the key in ${self.api_key_env})"
            ) from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UserError(f"{self.url}: cannot reach the endpoint ({reason}) (start the server or fix the base URL)") from None
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            shown = " ".join(raw[:200].decode("utf-8", "replace").split())
            raise UserError(f"{self.url}: not a chat-completions answer ({shown!r}) (is the base URL the /v1 root?)") from None
        if not isinstance(content, str):
            raise UserError(f"{self.url}: the answer has no text content (the model returned {type(content).__name__})")
        return content.strip()


class CachedTextGenerator(TextGenerator):
    """Wraps a generator; each answer is kept as ``<cache>/<k0k1>/<key>.json`` with
    ``key = sha256(inner.id + "\\n" + prompt)``, written atomically. ``calls`` counts questions
    that reached the inner generator."""

    def __init__(self, inner: TextGenerator, cache_dir: str | Path | None = None) -> None:
        self.inner = inner
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else user_cache_dir() / "textgen"
        self.calls = 0
        self.hits = 0

    @property
    def id(self) -> str:
        return self.inner.id

    def path_for(self, prompt: str) -> Path:
        key = hashlib.sha256(f"{self.inner.id}\n{prompt}".encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.json"

    def generate(self, prompt: str) -> str:
        path = self.path_for(prompt)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if record.get("generator") == self.inner.id and record.get("prompt") == prompt and isinstance(record.get("response"), str):
                self.hits += 1
                return record["response"]
        except (OSError, ValueError, AttributeError):
            pass  # missing or damaged: ask again
        response = self.inner.generate(prompt)
        self.calls += 1
        record = {"generator": self.inner.id, "prompt": prompt, "response": response}
        atomic_write_text(path, json.dumps(record, ensure_ascii=False, indent=1) + "\n")
        return response


# -- a tiny random causal LM for tests and the offline demo --------------------------------------

def build_tiny_causal_lm(folder: str | Path, seed: int = 0) -> Path:
    """Save a GPT-2-shaped causal LM with random weights (2 layers, width 32) and an offline
    CLIP BPE tokenizer into ``folder``. Its answers are noise; it exists to run the real
    loading and generation path without a download."""
    import torch
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    from t2ibias.models.tiny import build_clip_tokenizer

    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_clip_tokenizer()
    context = 512
    tokenizer.model_max_length = context
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=context,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,  # tied, a random model repeats its last input token (the tokenizer's end token)
    )
    model = GPT2LMHeadModel(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False,
    )
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / "t2ibias_tiny.json").write_text(json.dumps({"name": "tiny-random-causal-lm", "note": "random weights"}) + "\n")
    return folder


# -- augmenting a prompt set ---------------------------------------------------------------------

def subject_parts(pset: PromptSet, family: str, subj: Subject) -> tuple[str, str, str | None, str]:
    """(diversity-2 prompt, group, event, axis) of a subject: its family's first template,
    location-neutral, rewritten by ``diversity_diverse``. ``group``/``event`` come from
    ``extra`` (DoFaiR sets) or fall back to the subject text with no event."""
    fam = pset.families[family]
    axis = fam.get("axis", pset.axis)
    ctx = SubjectContext(subj.subject, subj.article or article(subj.subject), axis, subj.facts, subj.extra)
    template = next(iter(fam["templates"].values()))
    base = template.format(subject=subj.subject, article=ctx.article, in_place="")
    diverse = INTERVENTIONS["diversity_diverse"](base, ctx) or base
    group = str(subj.extra.get("group") or subj.subject)
    event = subj.extra.get("event")
    return diverse, group, (str(event) if event else None), axis


def augment_subjects(
    pset: PromptSet, intervention: str, compute: Callable[[str, Subject], dict[str, Any]], source: str,
) -> PromptSet:
    """A copy of ``pset`` whose subjects' ``extra`` gain ``compute(family, subject)``, with
    ``intervention`` added to its interventions (the set's, and a family's own list where it has
    one) and ``source`` to its provenance and hash."""
    families = {}
    for family, fam in pset.families.items():
        subjects = [replace(s, extra={**s.extra, **compute(family, s)}) for s in fam["subjects"]]
        families[family] = {**fam, "subjects": subjects}
        own = fam.get("interventions")
        if own and intervention not in own:
            families[family]["interventions"] = [*own, intervention]
    interventions = pset.interventions if intervention in pset.interventions else (*pset.interventions, intervention)
    return replace(
        pset,
        families=families,
        interventions=interventions,
        provenance=(*pset.provenance, f"{intervention}: {source}"),
        sha256=hashlib.sha256(f"{pset.sha256}\x1f{intervention}\x1f{source}".encode()).hexdigest(),
    )


def create_text_generator(llm: str, model: str | None = None) -> TextGenerator:
    """``llm`` is an http(s) URL of an OpenAI-compatible endpoint (``model`` names the model there)
    or a local folder of a transformers causal LM; either way answers are cached on disk."""
    if llm.startswith(("http://", "https://")):
        if not model:
            raise UserError(f"--llm {llm}: an endpoint needs --llm-model NAME (the model to ask there)")
        inner: TextGenerator = OpenAICompatibleTextGenerator(llm, model)
    else:
        path = Path(llm).expanduser()
        if not (path / "config.json").is_file():
            raise UserError(f"--llm {llm}: not an http(s) endpoint nor a folder with a causal LM (config.json missing)")
        inner = TransformersTextGenerator(path)
    return CachedTextGenerator(inner)


def augment_with_fai_vk(pset: PromptSet, textgen: TextGenerator) -> PromptSet:
    """Ask ``textgen`` DoFaiR's FAI-VK question for every subject; ``extra["fai_vk"]`` = the
    answer, which the ``fai_vk`` intervention appends to each template's diversity-2 prompt
    (also ``extra["fai_vk_query"]``, what was asked)."""

    def compute(family: str, subj: Subject) -> dict[str, Any]:
        diverse, group, event, axis = subject_parts(pset, family, subj)
        query = f"{diverse} {fai_vk_question(group, event, axis)}"
        return {"fai_vk": textgen.generate(query).strip(), "fai_vk_query": query}

    return augment_subjects(pset, "fai_vk", compute, f"answers of {textgen.id}")
