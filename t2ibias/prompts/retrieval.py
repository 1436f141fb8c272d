"""Retrieved knowledge for DoFaiR's FAI-RK: a BM25 index over a folder of text files.

Files (``*.txt``, ``*.md``, recursively, in path order) are split into passages of
``passage_words`` whitespace-separated words. Ranking is Okapi BM25 with k1 = 1.5, b = 0.75 over
lower-cased word tokens minus a short list of English function words, summed over the distinct
query terms, with the non-negative idf ``ln(1 + (N - n + 0.5) / (n + 0.5))`` (N passages, n of
them containing the term). The classic Okapi idf ``ln((N - n + 0.5) / (n + 0.5))`` is zero or
negative for terms in half of the passages or more, which on a small folder throws away the very
terms that match; the form used here never does. Ties are broken by source path and passage
number, so results are deterministic.

FAI-RK, as in DoFaiR's release: passages are retrieved for a "dominant group" and a "groups
present" question, pooled without repeats, written ``Document_{i}: {text}\\n\\n`` after
``Supporting Documents:`` and followed by the step-by-step question (:func:`fai_rk_question`);
the T2I prompt is the diversity-2 prompt + " " + the answer. DoFaiR's own search queries were
written per instance by an LLM; here they are the two fixed questions of :func:`retrieval_queries`.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from t2ibias.core.errors import UserError
from t2ibias.prompts.types import PromptSet, Subject
from t2ibias.prompts.textgen import (
    TextGenerator,
    augment_subjects,
    fai_rk_question,
    subject_parts,
)

K1 = 1.5
B = 0.75
SUFFIXES = (".txt", ".md")
STOPWORDS = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "by", "did", "do", "does", "for", "from", "had", "has", "have",
    "in", "is", "it", "its", "of", "on", "or", "that", "the", "their", "them", "they", "this", "to", "was",
    "were", "what", "when", "where", "which", "who", "will", "with",
))
_TOKEN = re.compile(r"\w+", re.UNICODE)


def tokenize(text: str) -> list[str]:
    return [t for t in _TOKEN.findall(text.lower()) if t not in STOPWORDS]


@dataclass(frozen=True)
class Passage:
    text: str
    #: File path relative to the indexed folder.
    source: str
    score: float = 0.0
    #: Passage number within its file (0-based).
    index: int = 0


class DocumentIndex:
    """BM25 over passages; build with :meth:`from_folder`."""

    def __init__(self, passages: list[Passage]) -> None:
        if not passages:
            raise UserError("no passages to index (give at least one non-empty document)")
        self.passages = list(passages)
        self._lengths = []
        self._postings: dict[str, list[tuple[int, int]]] = {}
        for i, passage in enumerate(self.passages):
            counts = Counter(tokenize(passage.text))
            self._lengths.append(sum(counts.values()))
            for term, tf in counts.items():
                self._postings.setdefault(term, []).append((i, tf))
        self._avg_length = (sum(self._lengths) / len(self._lengths)) or 1.0
        digest = hashlib.sha256()
        for p in self.passages:
            digest.update(f"{p.source}\x1f{p.index}\x1f{p.text}\x1e".encode())
        #: Content hash of the passages (changes when any document or the splitting changes).
        self.sha256 = digest.hexdigest()

    @classmethod
    def from_folder(cls, folder: str | Path, passage_words: int = 120) -> DocumentIndex:
        folder = Path(folder).expanduser()
        if passage_words < 1:
            raise UserError(f"passage_words must be at least 1, not {passage_words}")
        if not folder.is_dir():
            raise UserError(f"{folder}: no such folder (give a folder of .txt or .md documents)")
        files = sorted((p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES), key=lambda p: p.relative_to(folder).as_posix())
        passages = []
        for path in files:
            words = path.read_text(encoding="utf-8", errors="replace").split()
            source = path.relative_to(folder).as_posix()
            for n, start in enumerate(range(0, len(words), passage_words)):
                passages.append(Passage(" ".join(words[start : start + passage_words]), source, 0.0, n))
        if not passages:
            raise UserError(f"{folder}: no text in any .txt or .md file to index (add documents)")
        return cls(passages)

    def __len__(self) -> int:
        return len(self.passages)

    def scores(self, query: str) -> dict[int, float]:
        """BM25 score of every passage that shares a term with ``query`` (by passage number)."""
        n_passages = len(self.passages)
        scores: dict[int, float] = {}
        for term in dict.fromkeys(tokenize(query)):
            postings = self._postings.get(term)
            if not postings:
                continue
            idf = math.log(1.0 + (n_passages - len(postings) + 0.5) / (len(postings) + 0.5))
            for i, tf in postings:
                norm = K1 * (1.0 - B + B * self._lengths[i] / self._avg_length)
                scores[i] = scores.get(i, 0.0) + idf * tf * (K1 + 1.0) / (tf + norm)
        return scores

    def search(self, query: str, k: int = 3) -> list[Passage]:
        """The ``k`` best passages sharing a term with ``query``, best first."""
        ranked = sorted(self.scores(query).items(), key=lambda item: (-item[1], self.passages[item[0]].source, self.passages[item[0]].index))
        out = []
        for i, score in ranked[: max(k, 0)]:
            p = self.passages[i]
            out.append(Passage(p.text, p.source, score, p.index))
        return out


_GROUPS = {"race": "racial group", "gender": "gender", "gender_race": "gender and racial group"}


def retrieval_queries(group: str, event: str | None, axis: str) -> tuple[str, str]:
    """The dominant-group and groups-present questions used to retrieve passages."""
    who = f"the {group} in {event}" if event else f"the {group}"
    g = _GROUPS[axis]
    plural = "genders" if axis == "gender" else g + "s"
    return f"What was the dominant {g} among {who}?", f"Which {plural} were present among {who}?"


def format_documents(passages: list[Passage]) -> str:
    return "".join(f"Document_{i}: {p.text}\n\n" for i, p in enumerate(passages))


def augment_with_fai_rk(pset: PromptSet, index: DocumentIndex, textgen: TextGenerator, k: int = 3) -> PromptSet:
    """For every subject: retrieve ``k`` passages for each of the two questions, ask ``textgen``
    DoFaiR's FAI-RK question over them, store ``extra["fai_rk"]`` (the answer, appended to each
    template's diversity-2 prompt by the ``fai_rk`` intervention) and ``extra["fai_rk_sources"]`` (``source#passage`` of each document used)."""

    def compute(family: str, subj: Subject) -> dict[str, Any]:
        diverse, group, event, axis = subject_parts(pset, family, subj)
        pooled: dict[tuple[str, int], Passage] = {}
        for query in retrieval_queries(group, event, axis):
            for p in index.search(query, k):
                pooled.setdefault((p.source, p.index), p)
        docs = list(pooled.values())
        answer = textgen.generate(fai_rk_question(format_documents(docs), group, event, axis))
        return {"fai_rk": answer.strip(), "fai_rk_sources": [f"{p.source}#{p.index}" for p in docs]}

    return augment_subjects(pset, "fai_rk", compute, f"answers of {textgen.id} over BM25 top-{k} of index {index.sha256[:16]}")
