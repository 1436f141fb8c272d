"""Read the runs to compare and match their images on prompt text and seed index.

A run enters with its scored outputs only (``spec.json``, ``prompts.parquet``,
``image_labels.parquet``, ``measure.json`` and, when present, ``audit.json``), read through
:class:`t2ibias.store.rundir.RunDir`. Two images are the same unit of comparison when their prompt
text and their seed index (image index within the prompt) are equal: prompt ids may differ between
runs (another prompt-set version, a replayed folder), texts do not. Only prompts every run has
enter, and of each prompt only the seed indices every run has, so every model is counted on the
same number of images per prompt.

Numbers from two instruments are not comparable: runs measured with different classifiers or gates
(``measure.json``'s classifier and gate fingerprints) are refused unless the caller allows it, and
then every figure says so (:attr:`Matched.warning`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from t2ibias.core.errors import UserError
from t2ibias.core.vocab import PERSON_ATTRIBUTE
from t2ibias.metrics.score import BINS
from t2ibias.store.rundir import IMAGE_LABELS_FILE, MEASURE_FILE, RunDir

#: Prompt-record columns the comparison is split by (besides all prompts).
GROUP_COLUMNS = ("family", "intervention")
ALLOW_FLAG = "--allow-different-measurers"


@dataclass
class ComparedRun:
    """One run as the comparison sees it."""

    path: Path
    name: str  # how tables and charts name the model (unique among the compared runs)
    spec: dict[str, Any]
    prompts: pd.DataFrame
    labels: pd.DataFrame
    measurer: dict[str, Any]
    labels_of: dict[str, list[str]]  # axis -> the classifier's labels
    audit: dict[str, Any] | None

    @property
    def model_id(self) -> str:
        return str(self.spec["model"].get("id", "?"))


@dataclass
class Axis:
    """One measured attribute over the matched prompts: counts (runs, prompts, bins)."""

    name: str
    labels: list[str]
    bins: list[str]
    counts: np.ndarray


@dataclass
class Matched:
    """Runs matched on prompt text and seed index."""

    runs: list[ComparedRun]
    texts: list[str]  # the shared prompt texts, in the first run's order
    meta: pd.DataFrame  # per shared prompt: text, family, intervention (from the first run)
    n_images: np.ndarray  # per shared prompt: seed indices every run has
    axes: list[Axis]
    skipped_axes: dict[str, str] = field(default_factory=dict)  # axis -> why it is not compared
    n_prompts_per_run: list[int] = field(default_factory=list)
    warning: str | None = None  # set when runs were measured by different instruments

    def groups(self) -> list[tuple[str, str, np.ndarray]]:
        """(group_by, group, mask over shared prompts): all prompts, each family, each intervention
        (when there are several), and each family × intervention (likewise)."""
        out = [("all", "all", np.ones(len(self.texts), dtype=bool))]
        fam = self.meta["family"].astype(str).to_numpy()
        inter = self.meta["intervention"].astype(str).to_numpy()
        for value in dict.fromkeys(fam):
            out.append(("family", value, fam == value))
        if len(set(inter)) > 1:
            for value in dict.fromkeys(inter):
                out.append(("intervention", value, inter == value))
            for f in dict.fromkeys(fam):
                for i in dict.fromkeys(inter):
                    mask = (fam == f) & (inter == i)
                    if mask.any():
                        out.append(("family/intervention", f"{f}/{i}", mask))
        return out


def measurer_identity(run: RunDir) -> dict[str, Any]:
    """What measured a run: classifier id and fingerprint, gate fingerprint, measurer fingerprint
    (``measure.json``; the spec's classifier when a run predates it)."""
    cfg = run.measure_config
    if cfg is None:
        raise UserError(f"{run.file(MEASURE_FILE)}: missing (run `t2ibias measure {run.path}` and `t2ibias score {run.path}` first)")
    spec_cls = run.spec.get("classifier") or {}
    cls = cfg.get("classifier") or {}
    return {
        "classifier_id": str(cls.get("id") or spec_cls.get("id") or "?"),
        "classifier_fingerprint": str(cls.get("fingerprint") or spec_cls.get("fingerprint") or "?"),
        "gate_fingerprint": str(cfg["gate_fingerprint"]),
        "measurer": str(run.measurer or cfg.get("measurer") or "?"),
    }


def _identity_text(m: dict[str, Any]) -> str:
    return f"classifier {m['classifier_id']} ({m['classifier_fingerprint']}) behind gate {m['gate_fingerprint']}"


def load_run(path: str | Path) -> ComparedRun:
    """A scored run's files, checked; one :class:`UserError` line for a folder that is not one."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{p}: not a run directory (pass folders made by `t2ibias sweep`)")
    run = RunDir(p)
    spec = run.spec
    prompts = run.prompts
    labels = run.require_columns(IMAGE_LABELS_FILE, run.labels, ("prompt_id", "image_index", "attribute", "label"))
    measurer = measurer_identity(run)
    cls = run.classifier
    labels_of = {a: list(info.labels) for a, info in cls.attributes.items() if a != PERSON_ATTRIBUTE}
    return ComparedRun(p, str(spec["model"].get("id", p.name)), spec, prompts, labels, measurer, labels_of, run.audit)


def _names(runs: list[ComparedRun]) -> None:
    """Unique model names: the model id, with the run folder added where two runs share an id."""
    ids = [r.model_id for r in runs]
    for r in runs:
        r.name = r.model_id if ids.count(r.model_id) == 1 else f"{r.model_id} ({r.path.name})"
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.name] = seen.get(r.name, 0) + 1
        if seen[r.name] > 1:
            r.name = f"{r.name} #{seen[r.name]}"


def check_measurers(runs: list[ComparedRun], allow: bool) -> str | None:
    """None when one instrument measured every run; otherwise a refusal, or with ``allow`` the
    warning every figure carries."""
    first = runs[0]
    key = lambda r: (r.measurer["classifier_fingerprint"], r.measurer["gate_fingerprint"])
    other = next((r for r in runs[1:] if key(r) != key(first)), None)
    if other is None:
        return None
    if not allow:
        raise UserError(
            f"{other.path / MEASURE_FILE}: measured with {_identity_text(other.measurer)}, but {first.path} with "
            f"{_identity_text(first.measurer)}; figures of different instruments are not comparable "
            f"(measure every run with one classifier and gate: `t2ibias measure RUN`, or pass {ALLOW_FLAG})")
    kinds = sorted({_identity_text(r.measurer) for r in runs})
    return (f"measured with different instruments ({'; '.join(kinds)}): differences mix the models with the "
            f"classifiers, so they are not model differences ({ALLOW_FLAG})")


def match_runs(paths: list[str | Path], allow_different_measurers: bool = False) -> Matched:
    """Load and match the runs; one :class:`UserError` line when fewer than two are given, one is
    not a scored run, they were measured differently (unless allowed) or they share no prompt."""
    if len(paths) < 2:
        raise UserError(f"compare: {len(paths)} run given; pass two or more run directories (e.g. `t2ibias compare runs/a runs/b --out compare.html`)")
    resolved = [Path(p).resolve() for p in paths]
    dup = next((p for i, p in enumerate(resolved) if p in resolved[:i]), None)
    if dup is not None:
        raise UserError(f"compare: {dup} is given twice (pass each run once)")
    runs = [load_run(p) for p in paths]
    _names(runs)
    warning = check_measurers(runs, allow_different_measurers)
    # prompt text -> prompt id in each run (the first record of a text, should a run hold it twice)
    by_text = [dict(zip(r.prompts["text"][::-1], r.prompts["prompt_id"][::-1])) for r in runs]
    shared = [t for t in dict.fromkeys(runs[0].prompts["text"]) if all(t in m for m in by_text[1:])]
    if not shared:
        listed = ", ".join(str(r.path) for r in runs)
        raise UserError(f"compare: the runs {listed} share no prompt text (compare runs swept on the same prompt sets, "
                        "e.g. `--prompts occupations_v1` for every model)")
    first = runs[0].prompts.drop_duplicates("text").set_index("text")
    meta = pd.DataFrame({"text": shared})
    for col in GROUP_COLUMNS:
        values = first[col].reindex(shared) if col in first.columns else pd.Series([None] * len(shared))
        meta[col] = ["none" if pd.isna(v) else str(v) for v in values]
    # seed indices every run has, per shared prompt
    index_sets = []
    for r, m in zip(runs, by_text):
        pids = [m[t] for t in shared]
        idx = r.labels.groupby("prompt_id")["image_index"].agg(lambda s: frozenset(int(x) for x in s)).to_dict()
        index_sets.append([idx.get(pid, frozenset()) for pid in pids])
    common = [frozenset.intersection(*(s[i] for s in index_sets)) for i in range(len(shared))]
    n_images = np.array([len(c) for c in common])
    axes, skipped = _axes(runs, by_text, shared, common)
    return Matched(runs, shared, meta, n_images, axes, skipped, [len(m) for m in by_text], warning)


def _axes(runs: list[ComparedRun], by_text: list[dict[str, str]], shared: list[str],
          common: list[frozenset[int]]) -> tuple[list[Axis], dict[str, str]]:
    """Count matrices of every attribute all runs measured with the same labels."""
    axes: list[Axis] = []
    skipped: dict[str, str] = {}
    names = list(dict.fromkeys(a for r in runs for a in r.labels_of))
    width = 1 + max((max(c) for c in common if c), default=0)
    keep_codes = np.array(sorted(i * width + idx for i, c in enumerate(common) for idx in c), dtype=np.int64)
    for axis in names:
        if not all(axis in r.labels_of for r in runs):
            skipped[axis] = "not measured in every run"
            continue
        labels = runs[0].labels_of[axis]
        if any(r.labels_of[axis] != labels for r in runs[1:]):
            skipped[axis] = "the runs' classifiers give it different labels"
            continue
        bins = labels + list(BINS)
        counts = np.zeros((len(runs), len(shared), len(bins)), dtype=np.int64)
        for ri, (r, m) in enumerate(zip(runs, by_text)):
            pos = {m[t]: i for i, t in enumerate(shared)}
            sub = r.labels[r.labels["attribute"] == axis]
            if sub.empty:
                break
            p_i = sub["prompt_id"].map(pos)
            ok = p_i.notna().to_numpy()
            p_i = p_i.to_numpy()[ok].astype(np.int64)
            img = sub["image_index"].to_numpy()[ok].astype(np.int64)
            lab = sub["label"].astype(str).to_numpy()[ok]
            b_i = pd.Index(bins).get_indexer(lab)
            unknown = sorted(set(lab[b_i < 0]))
            if unknown:
                raise UserError(f"{r.path / IMAGE_LABELS_FILE}: label {unknown[0]!r} of {axis!r} is not one of the classifier's "
                                f"labels {labels} (re-run `t2ibias score {r.path}`)")
            keep = np.isin(p_i * width + np.minimum(img, width - 1), keep_codes) & (img < width)
            np.add.at(counts[ri], (p_i[keep], b_i[keep]), 1)
        else:
            axes.append(Axis(axis, labels, bins, counts))
            continue
        skipped[axis] = "no image labels in some run"
    return axes, skipped
