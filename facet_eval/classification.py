"""FACET person classification: recall@1 per (class, group), with disparities.

Protocol (Gustafson et al. 2023, §4): only images with exactly one annotated person are used
(the whole image is that person's example). A prediction is one class per person; it is
correct when it equals the person's primary class (``class1``) or, when annotated, their
secondary class (``class2``). Recall of a (class, group) is the share of that class's people
in that group who were classified correctly; disparities are differences of recalls between
two groups of an attribute, computed only when both have at least 50 people of the class.
Rows, confidence intervals (images resampled; here one person per image), tests of each gap
with Benjamini–Hochberg q-values and selection-adjusted intervals, and outputs are those of
:mod:`facet_eval.disaggregate`.

Predictions come from a file (:func:`load_class_predictions`) or from an open_clip zero-shot
classifier run on the images (:func:`facet_eval.runners.clip.predict_with_clip`).
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facet_eval.data import FacetData, canonical_class, single_person_mask
from facet_eval.disaggregate import CONFIDENCE, N_BOOT, SIGNIFICANT_Q, GroupedEvaluator, rows_from_values
from facet_eval.groups import group_membership, intersect
from facet_eval.tasks import RunOptions, Say, Task, register_task
from t2ibias.core.errors import UserError
from t2ibias.core.fmt import fmt_interval, fmt_value
from t2ibias.core.progress import Bars, done_of_total, quiet

TASK = "classification"
METRIC = "recall"
TOP_GAPS = 5
#: Attributes whose largest gaps are printed (all compared pairs go to largest_gaps.csv).
PRINTED_ATTRIBUTES = ("gender_presentation", "skin_tone_bucket", "age_presentation")
PREDICTION_SHAPE = "{person_id, class} or {image_id, class}"
GAP_COLUMNS = ("attribute", "direction", "group_a", "group_b", "rank", "class", "gap", "ci_low", "ci_high",
               "recall_a", "recall_b", "n_a", "n_b", "p_value", "q_value", "adj_ci_low", "adj_ci_high", "n_tests",
               "method", "adj_method", "note")
#: What every largest-gap row says about its selection.
SELECTION_NOTE = ("selected as one of the largest gaps, so inflated (winner's curse): read adj_ci, simultaneous "
                  "over the n_tests gaps it was selected from")


# ---------------------------------------------------------------- people
# ---------------------------------------------------------------- predictions file
def _read_json_items(path: Path) -> list[tuple[str, Any]]:
    try:
        with open(path, encoding="utf-8") as fh:
            items = json.load(fh)
    except (ValueError, RecursionError) as exc:  # RecursionError: arrays nested thousands deep
        raise UserError(f"{path}: not valid JSON: {exc} (write a JSON list of {PREDICTION_SHAPE}, or a CSV)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot be read: {exc} (check the file)") from None
    if not isinstance(items, list):
        raise UserError(f"{path}: expected a JSON list of predictions (write [{PREDICTION_SHAPE}, ...])")
    return [(f"{path}: item {k}", d) for k, d in enumerate(items)]


def _read_csv_items(path: Path) -> list[tuple[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot be read: {exc} (check the file)") from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if "class" not in header or not ({"person_id", "image_id"} & set(header)):
        raise UserError(f"{path}:1: header: needs columns class and person_id or image_id, got {header} "
                        "(write a header line such as person_id,class)")
    out = []
    for k, row in enumerate(reader):
        clean = {str(key).strip(): (v.strip() if isinstance(v, str) else v)
                 for key, v in row.items() if key is not None}
        clean = {key: v for key, v in clean.items() if v not in ("", None)}
        out.append((f"{path}: item {k} (line {k + 2})", clean))
    return out


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v.strip())
    return None


def load_class_predictions(path: str | Path, data: FacetData) -> dict[int, str]:
    """Read and validate class predictions: person_id → predicted class, for every
    single-person person.

    The file is a JSON list ``[{"person_id": int, "class": str}, ...]`` or a CSV with the same
    columns (``.csv``). ``image_id`` may replace ``person_id``, meaning that image's only person.
    Predictions for people of multi-person images (by person_id or image_id) are ignored, since
    the protocol scores single-person images only; other keys are ignored too. Raises
    :class:`UserError` naming the item for a missing field, an unknown id, a class that is not
    one of the release's classes or a second prediction for the same person, and when a
    single-person person has no prediction.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found (pass a JSON list or CSV of {PREDICTION_SHAPE} with --predictions)")
    items = _read_csv_items(path) if path.suffix.lower() == ".csv" else _read_json_items(path)
    people = _People.of(data)
    out: dict[int, str] = {}
    first_item: dict[Any, str] = {}
    for where, d in items:
        cls, key = _read_prediction(where, d, people)
        if key in first_item:
            raise UserError(f"{where}: duplicate prediction for {_describe(key)} (also {first_item[key]}; "
                            "keep one prediction per person)")
        first_item[key] = where.split(": ", 1)[1] if ": " in where else where
        if isinstance(key, int) and people.single[people.row_of[key]]:
            out[key] = cls
    _check_complete(path, out, people)
    return out


@dataclass
class _People:
    """Who a prediction can name: every person's row and image, the release's images and
    classes, and the only person of each single-person image."""

    single: np.ndarray
    pids: list[int]
    row_of: dict[int, int]
    image_of: dict[int, int]
    images: set[int]
    only_person: dict[int, int]
    classes: list[str]

    @classmethod
    def of(cls, data: FacetData) -> _People:
        single = single_person_mask(data)
        pids = [int(p) for p in data.people["person_id"]]
        image_of = dict(zip(pids, (int(i) for i in data.people["image_id"])))
        return cls(single=single, pids=pids, row_of={p: i for i, p in enumerate(pids)}, image_of=image_of,
                   images={int(i) for i in data.images["id"]},
                   only_person={image_of[p]: p for p, s in zip(pids, single) if s}, classes=data.classes)


def _read_prediction(where: str, d: Any, people: _People) -> tuple[str, Any]:
    """The class of one item and whom it names: a person_id, or ``("image", id)`` for an image
    without a single person."""
    if not isinstance(d, dict):
        raise UserError(f"{where}: not an object (each prediction is {PREDICTION_SHAPE})")
    has_pid = d.get("person_id") not in (None, "")
    has_img = d.get("image_id") not in (None, "")
    if not has_pid and not has_img:
        raise UserError(f"{where}: field person_id: missing (each prediction is {PREDICTION_SHAPE})")
    if "class" not in d or d["class"] is None:
        raise UserError(f"{where}: field class: missing (each prediction is {PREDICTION_SHAPE})")
    cls = _read_class(where, d["class"], people.classes)
    img = _read_image_id(where, d["image_id"], people) if has_img else None
    if has_pid:
        return cls, _read_person_id(where, d["person_id"], img, people)
    return cls, people.only_person.get(img, ("image", img))  # type: ignore[arg-type]


def _read_class(where: str, cls: Any, classes: list[str]) -> str:
    if not isinstance(cls, str):
        raise UserError(f"{where}: field class: not a string: {cls!r} (write the class name, e.g. {classes[0]!r})")
    cls = canonical_class(cls)  # `disk_jockey` as the release's scripts write it is `disk jockey`
    if cls not in classes:
        close = difflib.get_close_matches(cls, classes, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"e.g. {', '.join(repr(c) for c in classes[:3])}"
        raise UserError(f"{where}: field class: {cls!r} is not one of the {len(classes)} classes of this "
                        f"FACET release ({hint})")
    return cls


def _read_image_id(where: str, value: Any, people: _People) -> int:
    img = _as_int(value)
    if img is None:
        raise UserError(f"{where}: field image_id: not an integer: {value!r} (use coco_boxes.json image ids)")
    if img not in people.images:
        raise UserError(f"{where}: field image_id: {img} is not an image of coco_boxes.json (use its image ids)")
    return img


def _read_person_id(where: str, value: Any, img: int | None, people: _People) -> int:
    pid = _as_int(value)
    if pid is None:
        raise UserError(f"{where}: field person_id: not an integer: {value!r} (use annotations.csv person_id values)")
    if pid not in people.row_of:
        raise UserError(f"{where}: field person_id: {pid} is not a person of annotations.csv (use its person_id values)")
    if img is not None and img != people.image_of[pid]:
        raise UserError(f"{where}: field image_id: {img} is not the image of person {pid} "
                        f"(that is {people.image_of[pid]}; fix image_id or leave it out)")
    return pid


def _check_complete(path: Path, out: dict[int, str], people: _People) -> None:
    """UserError when a single-person person has no prediction."""
    missing = [p for p, s in zip(people.pids, people.single) if s and p not in out]
    if missing:
        raise UserError(
            f"{path}: {len(missing)} of {int(people.single.sum())} single-person people have no prediction, first "
            f"person_id {missing[0]} (image_id {people.image_of[missing[0]]}) (predict one class for every person "
            "who is alone in an image; `facet-eval classify --model` writes a complete predictions.json)"
        )


def _describe(key: Any) -> str:
    return f"image {key[1]}" if isinstance(key, tuple) else f"person {key}"


def write_class_predictions(predictions: dict[int, str], path: str | Path) -> Path:
    """Write predictions in the ``--predictions`` JSON format (sorted by person_id), atomically."""
    from t2ibias.core.files import atomic_write_text

    path = Path(path)
    lines = [json.dumps({"person_id": int(p), "class": c}) for p, c in sorted(predictions.items())]
    atomic_write_text(path, "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n")
    return path


# ---------------------------------------------------------------- scoring
def correct_flags(data: FacetData, predictions: dict[int, str]) -> np.ndarray:
    """1.0 where the prediction for a person equals their class1 or class2, else 0.0."""
    return np.array([1.0 if predictions.get(int(p)) in cls else 0.0
                     for p, cls in zip(data.people["person_id"], data.people["classes"])], dtype=float)


def evaluate_classification(
    data: FacetData,
    predictions: dict[int, str],
    intersections: Iterable[tuple[str, str]] = (),
    n_boot: int = N_BOOT,
    seed: int = 0,
    per_class: bool = True,
    confidence: float = CONFIDENCE,
) -> list[dict[str, Any]]:
    """Rows of ``recall`` and ``disparity_recall`` over single-person people (see the module doc)."""
    evaluator = ClassificationEvaluator(data, intersections, n_boot, seed, per_class, confidence)
    evaluator.process(predictions)
    return evaluator.evaluate()


class ClassificationEvaluator(GroupedEvaluator):
    """Person classification with detectron2's evaluator protocol: :meth:`process` takes
    predictions (person_id → class) for any set of people, each person at most once;
    :meth:`evaluate` scores every single-person person (one without a prediction counts as
    wrong) and returns the rows of :func:`facet_eval.disaggregate.rows_from_values`."""

    def reset(self) -> None:
        self._predictions: dict[int, str] = {}

    def process(self, predictions: Mapping[int, str]) -> None:
        for pid, cls in predictions.items():
            if pid in self._predictions:
                raise ValueError(f"person {pid} was already processed (process each person once, or reset first)")
            self._predictions[pid] = cls

    def evaluate(self) -> list[dict[str, Any]]:
        return rows_from_values(self.data, {METRIC: correct_flags(self.data, self._predictions)},
                                single_person_mask(self.data), self.intersections, self.n_boot, self.seed,
                                self.per_class, task=TASK, confidence=self.confidence)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _flip(lo: Any, hi: Any, sign: float) -> tuple[Any, Any]:
    """An interval of a − b as one of b − a when ``sign`` < 0; non-finite bounds become None."""
    lo, hi = (lo if _finite(lo) else None), (hi if _finite(hi) else None)
    if sign > 0:
        return lo, hi
    return (-hi if hi is not None else None), (-lo if lo is not None else None)


def largest_gaps(rows: list[dict[str, Any]], top: int = TOP_GAPS) -> list[dict[str, Any]]:
    """For every compared group pair (a, b) of every attribute, the classes with the largest
    recall gaps in each direction, as in FACET's Table 4: up to ``top`` classes where a − b > 0,
    largest first, then up to ``top`` where b − a > 0 (ties by class name). Gaps are fractions
    with the joint image-bootstrap CI of the difference, both recalls and both group sizes;
    ``pair`` is the compared (a, b) of the disparity row, ``direction`` the order of this gap.

    Each row also carries its disparity row's ``p_value`` and ``q_value`` (Benjamini–Hochberg
    over the attribute's per-class gaps, the rows this table is selected from) and the
    selection-adjusted interval ``adj_ci_low``/``adj_ci_high``: Bonferroni-simultaneous over
    those ``n_tests`` gaps, so it covers the selected gaps whatever the selection."""
    recall = {(r["attribute"], r["group"], r["class"]): r for r in rows if r["metric"] == METRIC}
    pairs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["metric"] == f"disparity_{METRIC}" and r["class"] is not None and _finite(r["value"]):
            pairs.setdefault((r["attribute"], r["group_a"], r["group_b"]), []).append(r)
    out: list[dict[str, Any]] = []
    for (attr, ga, gb), found in pairs.items():
        for first, second, sign in ((ga, gb, 1.0), (gb, ga, -1.0)):
            ranked = sorted((r for r in found if sign * r["value"] > 0), key=lambda r: (-sign * r["value"], r["class"]))
            for rank, r in enumerate(ranked[:top], 1):
                lo, hi = _flip(r.get("ci_low"), r.get("ci_high"), sign)
                alo, ahi = _flip(r.get("adj_ci_low"), r.get("adj_ci_high"), sign)
                ra, rb = recall[(attr, first, r["class"])], recall[(attr, second, r["class"])]
                out.append({"attribute": attr, "direction": f"{first}-{second}", "group_a": first, "group_b": second,
                            "pair": (ga, gb),
                            "rank": rank, "class": r["class"], "gap": sign * r["value"],
                            "ci_low": lo, "ci_high": hi,
                            "recall_a": ra["value"], "recall_b": rb["value"], "n_a": ra["n"], "n_b": rb["n"],
                            "p_value": r.get("p_value"), "q_value": r.get("q_value"),
                            "adj_ci_low": alo, "adj_ci_high": ahi, "n_tests": r.get("n_tests"),
                            "method": r.get("method"), "adj_method": r.get("adj_method"), "note": SELECTION_NOTE})
    return out


def write_largest_gaps(gaps: list[dict[str, Any]], path: str | Path) -> Path:
    """``largest_gaps.csv`` (columns :data:`GAP_COLUMNS`, fractions), atomically."""
    from t2ibias.core.csvsafe import escape_cell
    from t2ibias.core.files import atomic_write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(GAP_COLUMNS), lineterminator="\n")
    w.writeheader()
    for g in gaps:
        w.writerow({k: ("" if g.get(k) is None else escape_cell(g[k])) for k in GAP_COLUMNS})
    path = Path(path)
    atomic_write_text(path, buf.getvalue())
    return path


def _pts(v: Any) -> str:
    """A recall difference in points, one decimal; ``-`` when missing."""
    return fmt_value(v, 1, scale=100, missing="-")


def _pts_interval(low: Any, high: Any) -> str:
    return fmt_interval(low, high, 1, scale=100, missing="-")


def _q(v: Any) -> str:
    return (f"{v:.2g}" + ("*" if v < SIGNIFICANT_Q else "")) if _finite(v) else "-"


def print_largest_gaps(gaps: list[dict[str, Any]], console: Any = None,
                       attributes: Iterable[str] = PRINTED_ATTRIBUTES, confidence: float = CONFIDENCE) -> None:
    """Print the largest gaps of the given attributes (and of intersections), one table per
    group pair with both directions side by side, in recall points, each gap with its naive
    interval, its q-value and its selection-adjusted interval."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    wanted = set(attributes)
    shown = [g for g in gaps if g["attribute"] in wanted or "&" in g["attribute"]]
    if not shown:
        console.print("largest gaps: none (no class has >= 50 single-person people in both groups of a "
                      f"compared pair among {', '.join(sorted(wanted))})", markup=False)
        return
    pairs: dict[tuple[str, str, str], dict[str, list[dict[str, Any]]]] = {}
    for g in shown:
        pairs.setdefault((g["attribute"], *g["pair"]), {}).setdefault(g["direction"], []).append(g)
    level = f"{100 * confidence:g}%"
    for (attr, ga, gb), by_dir in pairs.items():
        tests = next((g["n_tests"] for lst in by_dir.values() for g in lst if g.get("n_tests")), None)
        table = Table(title=escape(f"largest gaps: {attr} (recall points, classes with >= 50 people in both groups)"))
        for col in ("class", "gap", f"{level} CI", "adjusted CI", "q", "n"):
            table.add_column(col, justify="left" if col == "class" else "right", no_wrap=col != "class")
        for d in (f"{ga}-{gb}", f"{gb}-{ga}"):
            table.add_row(f"[bold]{escape(d.replace('-', ' − '))}[/bold]", "", "", "", "", "")
            for g in by_dir.get(d, []):
                table.add_row(escape(str(g["class"])), _pts(g["gap"]), _pts_interval(g["ci_low"], g["ci_high"]),
                              _pts_interval(g.get("adj_ci_low"), g.get("adj_ci_high")), _q(g.get("q_value")),
                              f"{g['n_a']}/{g['n_b']}")
        console.print(table)
        among = f"the {tests} per-class gaps of {attr}" if tests else f"the per-class gaps of {attr}"
        console.print(f"Selecting the largest gaps inflates them. adjusted CI: {level} simultaneous over {among} "
                      f"(Bonferroni); q: Benjamini-Hochberg over the same gaps, * = significant (q < {SIGNIFICANT_Q}).")


# ---------------------------------------------------------------- task
class ClassificationTask(Task):
    """``facet-eval classify``: class predictions from a file, or from the open_clip zero-shot
    runner (:mod:`facet_eval.runners.clip`, its default classifier when no file is given); writes
    ``largest_gaps.csv`` beside the rows."""

    id = TASK
    command = "classify"
    #: rows of ``facet-eval classify`` name it ``recall``; ``recall@1`` is accepted for other tools' rows
    main_metrics = (METRIC, "recall@1")
    output = "class"
    extra_files = ("largest_gaps.csv",)

    def evaluator(self, data: FacetData, **options: Any) -> ClassificationEvaluator:
        return ClassificationEvaluator(data, **options)

    def check_options(self, opts: RunOptions) -> None:
        if opts.model is not None and opts.predictions is not None:
            raise UserError(f"{self.command}: pass either --model ID or --predictions FILE, not both")
        if opts.batch_size < 1:
            raise UserError(f"--batch-size: {opts.batch_size} is not a positive number (use e.g. 64)")

    def prepare(self, data: FacetData, opts: RunOptions, intersections: list[tuple[str, str]]) -> dict[str, Any]:
        """Check the intersections before any model runs, and that some person is alone in an image."""
        membership = group_membership(data.people)
        for a, b in intersections:
            intersect(membership, a, b)
        n_single = int(single_person_mask(data).sum())
        if n_single == 0:
            raise UserError(f"{opts.facet_root / 'annotations' / 'annotations.csv'}: no image has exactly one "
                            "annotated person (classification scores people alone in an image; check the FACET root)")
        return {"task": self.id, "facet_root": str(opts.facet_root.resolve()), "seed": opts.seed,
                "n_single_person_people": n_single}

    def load_predictions(self, path: Path, data: FacetData) -> dict[int, str]:
        return load_class_predictions(path, data)

    def predict(self, data: FacetData, opts: RunOptions, say: Say,
                bars: Bars = quiet) -> tuple[dict[int, str], dict[str, Any]]:
        from facet_eval.runners.clip import DEFAULT_MODEL, predict_with_clip

        model_id = opts.model or DEFAULT_MODEL
        with bars("classify") as bar:
            preds, info = predict_with_clip(data, model_id, device=opts.device, batch_size=opts.batch_size,
                                            progress=done_of_total(bar))
        if info["parameters"].get("random_weights"):
            say(f"note: {model_id} has random weights; its numbers are meaningless by construction")
        return preds, {"model": {"name": info["name"], "parameters": info["parameters"]}, "device": info["device"],
                       "batch_size": opts.batch_size,
                       "software": {"torch": info["torch"], "open_clip": info["open_clip"]},
                       "predictions": "predictions.json"}

    def write_predictions(self, predictions: dict[int, str], path: Path) -> Path:
        return write_class_predictions(predictions, path)

    def evaluate(self, data: FacetData, predictions: dict[int, str], intersections: list[tuple[str, str]],
                 seed: int) -> list[dict[str, Any]]:
        return evaluate_classification(data, predictions, intersections=intersections, seed=seed)

    def write_extra(self, rows: list[dict[str, Any]], out: Path) -> None:
        gaps = largest_gaps(rows)
        write_largest_gaps(gaps, out / "largest_gaps.csv")
        print_largest_gaps(gaps)

    def counts(self, run: dict[str, Any]) -> str:
        return f", {run['n_single_person_people']} single-person people"


register_task(ClassificationTask())
