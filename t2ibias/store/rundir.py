"""The run directory contract: the files a run holds, who writes them, and the readers every
stage and the report use (:class:`RunDir`).

Each stage reads only the files written by the stages before it, so any stage can be re-run
alone (``t2ibias generate|measure|score|report DIR``) and the report reads outputs only. A run
holds everything that decides its numbers: the whole generator and classifier specs in
``spec.json``, the measurer identity in ``measure.json``, the audit it is corrected with in
``audit.json``; nothing outside the directory (a config registry, a user cache) is read again.
"""

from __future__ import annotations

import io
import json
import re
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from t2ibias.core.errors import UserError
from t2ibias.core.files import atomic_write_bytes
from t2ibias.models.classifier_spec import ClassifierSpec, classifier_spec_from_dict, resolve_classifier_spec
from t2ibias.models.generator_spec import GeneratorSpec
from t2ibias.store.image_store import MANIFEST_GLOB, ImageStore, image_keys, image_seeds

SPEC_FILE = "spec.json"
PROMPTS_FILE = "prompts.parquet"
TOKENS_FILE = "prompt_tokens.parquet"
#: Per (image, measurer) rows written by ``measure``: crops, labels, scores.
MEASUREMENTS_FILE = "measurements.parquet"
#: Whole-image CLIP embeddings (L2-normalized), for distances between groups of images.
EMBEDDINGS_FILE = "embeddings.parquet"
#: The gate and measurers the latest ``measure`` used; the score stage reads its gate from here.
MEASURE_FILE = "measure.json"
#: fingerprint → {"id", "kind", "gate", ...} for every measurer with rows in the measurement file.
MEASURERS_FILE = "measurers.json"
#: One row per image with its label per attribute (or the bin it fell in), written by ``score``.
IMAGE_LABELS_FILE = "image_labels.parquet"
METRICS_FILE = "metrics.json"
METRICS_CSV_FILE = "metrics.csv"
#: The instrument's own error (audit, agreement between measurers), written by ``score``.
INSTRUMENT_FILE = "instrument.json"
#: The audit the run is corrected with, copied in with its source and checksum (``provenance``).
AUDIT_FILE = "audit.json"
REPORT_FILE = "report.html"
MODEL_CARD_FILE = "model_card.md"
#: A ``replay:DIR`` run's index rows (source file, its sha256, the prompt and image index each
#: became) and the rows it could not use (missing, unknown prompt, duplicate, unreadable), by sweep.
REPLAY_INDEX_FILE = "replay_index.parquet"
REPLAY_PROBLEMS_FILE = "replay_problems.json"
#: Report thumbnails, ``thumbs/<key>.jpg``: made once by ``report``, reused by the next report.
THUMBS_DIR = "thumbs"
#: The stage (``t2ibias STAGE DIR``) that writes each file: what a missing file's error tells to run.
WRITTEN_BY = {
    SPEC_FILE: "sweep", PROMPTS_FILE: "sweep", TOKENS_FILE: "sweep", "manifest*.jsonl": "generate",
    MEASUREMENTS_FILE: "measure", EMBEDDINGS_FILE: "measure", MEASURE_FILE: "measure", MEASURERS_FILE: "measure",
    IMAGE_LABELS_FILE: "score", METRICS_FILE: "score", METRICS_CSV_FILE: "score", INSTRUMENT_FILE: "score",
    AUDIT_FILE: "score", REPORT_FILE: "report", MODEL_CARD_FILE: "report", THUMBS_DIR: "report",
    REPLAY_INDEX_FILE: "sweep", REPLAY_PROBLEMS_FILE: "sweep",
}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


#: Fields of spec.json every stage relies on, with the types they must have.
SPEC_FIELDS: dict[str, tuple[type, ...]] = {
    "fingerprint": (str,), "model": (dict,), "weights": (str,), "generator_fingerprint": (str,),
    "n_seeds": (int,), "base_seed": (int,), "classifier": (dict,), "defining": (dict,),
}


def read_spec(run_dir: Path) -> dict[str, Any]:
    path = run_dir / SPEC_FILE
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"{path}: missing; {run_dir} is not a t2ibias run (start one with `t2ibias sweep --out {run_dir}`)") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise UserError(f"{path}: not valid JSON ({exc}); restore it, or start a new run with another --out") from None
    fix = "restore it, or start the run again with `t2ibias sweep`"
    if not isinstance(spec, dict):
        raise UserError(f"{path}: a JSON {type(spec).__name__}, not the run spec object `t2ibias sweep` writes ({fix})")
    for key, types in SPEC_FIELDS.items():
        value = spec.get(key)
        if key not in spec:
            raise UserError(f"{path}: field {key}: missing ({fix})")
        if not isinstance(value, types) or isinstance(value, bool):
            kind = {str: "a string", int: "an integer", dict: "an object"}[types[0]]
            raise UserError(f"{path}: field {key}: {json.dumps(value)[:40]} is not {kind} ({fix})")
    if spec["n_seeds"] < 1:
        raise UserError(f"{path}: field n_seeds: {spec['n_seeds']} is not a positive number ({fix})")
    return spec


def read_prompts(run_dir: Path, spec: dict[str, Any] | None = None) -> pd.DataFrame:
    """The run's prompt records, cut to the spec's ``limit`` when one is set."""
    path = run_dir / PROMPTS_FILE
    try:
        df = pd.read_parquet(path)
    except FileNotFoundError:
        raise UserError(f"{path}: missing (re-run `t2ibias sweep` with the same options to rewrite it)") from None
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise UserError(f"{path}: unreadable ({exc}); re-run `t2ibias sweep` with the same options to rewrite it") from None
    spec = spec if spec is not None else read_spec(run_dir)
    if spec.get("limit"):
        df = df.head(int(spec["limit"]))
    return df.reset_index(drop=True)


def run_output_names() -> tuple[str, ...]:
    """File names a run writes at its top level (images and manifest shards aside)."""
    return (SPEC_FILE, PROMPTS_FILE, TOKENS_FILE, MEASUREMENTS_FILE, EMBEDDINGS_FILE, MEASURE_FILE, MEASURERS_FILE,
            IMAGE_LABELS_FILE, METRICS_FILE, METRICS_CSV_FILE, INSTRUMENT_FILE, AUDIT_FILE, REPORT_FILE, MODEL_CARD_FILE,
            REPLAY_INDEX_FILE, REPLAY_PROBLEMS_FILE)


_IMAGE_NAME = re.compile(r"^[0-9a-f]{32}\.png$")
_TEMP_NAME = re.compile(r"^\..+\.tmp$")


def _is_t2ibias_spec(doc: Any) -> bool:
    return (isinstance(doc, dict) and isinstance(doc.get("fingerprint"), str) and isinstance(doc.get("defining"), dict)
            and "t2ibias_version" in doc)


def check_clearable(run_dir: Path, spec: Any) -> None:
    """Refuse to clear anything but a t2ibias run's own folder (never the working or home directory)."""
    target = run_dir.resolve()
    for name, protected in (("the working directory", Path.cwd().resolve()), ("the home directory", Path.home().resolve())):
        if target == protected or target in protected.parents:
            raise UserError(
                f"--out {run_dir}: is {name}{' or a folder above it' if target != protected else ''}; "
                "--force clears only a run's own folder (pass it, e.g. --out runs/NAME)"
            )
    if not _is_t2ibias_spec(spec):
        raise UserError(f"{run_dir / SPEC_FILE}: not the spec of a t2ibias run, so --force deletes nothing here (choose another --out)")


def clear_run(run_dir: Path) -> list[Path]:
    """Delete the files a run writes (spec, prompts, images, manifest shards, measurements, metrics,
    report) and nothing else: files of other names, and folders left non-empty by them, stay.
    Returns what was deleted."""
    deleted: list[Path] = []

    def unlink(path: Path) -> None:
        if path.is_symlink() or path.is_file():
            path.unlink()
            deleted.append(path)

    for name in run_output_names():
        unlink(run_dir / name)
    for path in run_dir.glob(MANIFEST_GLOB):
        unlink(path)
    for path in run_dir.iterdir():
        if _TEMP_NAME.match(path.name):
            unlink(path)
    for name in (MEASUREMENTS_FILE, EMBEDDINGS_FILE):
        folder = parts_dir(run_dir, name)
        if folder.is_dir() and not folder.is_symlink():
            for path in folder.iterdir():
                if parse_part_name(path.name) is not None or _TEMP_NAME.match(path.name):
                    unlink(path)
            _rmdir_if_empty(folder)
    images = run_dir / "images"
    if images.is_dir() and not images.is_symlink():
        for folder in images.iterdir():
            if folder.is_symlink() or not folder.is_dir() or not re.fullmatch(r"[0-9a-f]{2}", folder.name):
                continue
            for path in folder.iterdir():
                if (_IMAGE_NAME.match(path.name) and path.name.startswith(folder.name)) or _TEMP_NAME.match(path.name):
                    unlink(path)
            _rmdir_if_empty(folder)
        _rmdir_if_empty(images)
    thumbs = run_dir / THUMBS_DIR
    if thumbs.is_dir() and not thumbs.is_symlink():
        for path in thumbs.iterdir():
            if re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}\.jpg", path.name) or _TEMP_NAME.match(path.name):
                unlink(path)
        _rmdir_if_empty(thumbs)
    return deleted


def _rmdir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


class ImageJob(NamedTuple):
    """One image of a run (a tuple: cheap to make by the hundred thousand)."""

    key: str
    prompt_id: str
    text: str
    index: int
    seed: int


def _prompt_images(spec: dict[str, Any], prompts: pd.DataFrame) -> Iterator[tuple[Any, Any, list[int], list[int], list[str]]]:
    """(prompt_id, text, indices, seeds, keys) of every prompt of the run, in order."""
    gfp = spec["generator_fingerprint"]
    params = GeneratorSpec(**{k: v for k, v in spec["model"].items()}).generation_params()
    indices = list(range(int(spec["n_seeds"])))
    per_prompt = prompts["image_indices"] if "image_indices" in prompts.columns else [indices] * len(prompts)
    base_seed = int(spec["base_seed"])
    for pid, text, own in zip(prompts["prompt_id"], prompts["text"], per_prompt):
        indices = [int(i) for i in own]
        seeds = image_seeds(base_seed, pid, indices)
        yield pid, text, indices, seeds, image_keys(gfp, text, seeds, params)


def image_jobs(spec: dict[str, Any], prompts: pd.DataFrame) -> list[ImageJob]:
    """Every image of the run, prompt-major; keys and seeds depend on nothing but the spec.

    A prompt has images ``0..n_seeds-1``, or the indices its ``image_indices`` column lists (a
    ``replay:`` run, whose prompts have as many images as its index gives them)."""
    jobs = []
    for pid, text, indices, seeds, keys in _prompt_images(spec, prompts):
        jobs.extend(ImageJob(k, pid, text, i, s) for k, i, s in zip(keys, indices, seeds))
    return jobs


def image_table(spec: dict[str, Any], prompts: pd.DataFrame) -> pd.DataFrame:
    """The images of :func:`image_jobs` as columns ``key, prompt_id, image_index`` (no tuple per
    image: what the score stage reads of a million images)."""
    keys: list[str] = []
    pids: list[Any] = []
    index: list[int] = []
    for pid, _text, indices, _seeds, kk in _prompt_images(spec, prompts):
        keys += kk
        pids += [pid] * len(kk)
        index += indices
    return pd.DataFrame({"key": pd.Series(keys, dtype=object), "prompt_id": pd.Series(pids, dtype=object),
                         "image_index": np.array(index, dtype=np.int64)})


# --------------------------------------------------------------------------- measurement tables

EMBEDDING_COLUMNS = ["key", "measurer", "embedding"]
COLUMNS = [
    "key", "measurer", "unit", "face_index", "box_x", "box_y", "box_w", "box_h",
    "attribute", "label", "top_label", "score", "margin", "probs",
]


#: The columns that identify a measurement row (and an embedding row: key and measurer).
ROW_ID = ["key", "measurer", "unit", "face_index", "attribute"]
EMBEDDING_ID = ["key", "measurer"]
#: A measure checkpoint appends one part file per table, ``<table>.parts/<worker>-<seq>.parquet``;
#: the end of the stage folds them into the table (compaction) and removes them. Until then the
#: readers below read the table and its parts together, later parts winning.
PARTS_SUFFIX = ".parts"
_PART_NAME = re.compile(r"^(?P<worker>[A-Za-z0-9][A-Za-z0-9_.-]*)-(?P<seq>[0-9]{6,})\.parquet$")


def parts_dir(run_dir: Path, name: str = MEASUREMENTS_FILE) -> Path:
    """The folder of part files of table ``name`` (``measurements.parts/`` for ``measurements.parquet``)."""
    return Path(run_dir) / (name.removesuffix(".parquet") + PARTS_SUFFIX)


def part_name(worker: str, seq: int) -> str:
    return f"{worker}-{seq:06d}.parquet"


def parse_part_name(file_name: str) -> tuple[str, int] | None:
    """(worker, seq) of a part file name, None for any other name (temp files included)."""
    m = _PART_NAME.match(file_name)
    return (m["worker"], int(m["seq"])) if m else None


def part_files(run_dir: Path, name: str = MEASUREMENTS_FILE) -> list[Path]:
    """The part files of table ``name``, in the order they apply: by worker name, then sequence."""
    folder = parts_dir(run_dir, name)
    if not folder.is_dir():
        return []
    found = [(parsed, p) for p in folder.iterdir() if (parsed := parse_part_name(p.name)) is not None and p.is_file()]
    return [p for _, p in sorted(found, key=lambda item: item[0])]


def _read_table_file(path: Path, run_dir: Path, columns: list[str] | None = None) -> pd.DataFrame:
    try:
        return pd.read_parquet(path, columns=columns)
    except Exception as exc:
        raise UserError(f"{path}: unreadable ({exc}); delete it and re-run `t2ibias measure {run_dir}`") from None


def read_measurements(run_dir: Path, name: str = MEASUREMENTS_FILE, *, parts: bool = True,
                      columns: list[str] | None = None) -> pd.DataFrame:
    """Table ``name`` (``measurements.parquet`` or ``embeddings.parquet``) with the rows of its part
    files after it (``parts=False``: the compacted file alone). A row identity (:data:`ROW_ID`, or
    key and measurer for embeddings) met twice keeps its last rows, so an interrupted stage reads as
    if it had written one file. ``columns``: only those (the row identity among them), in that order."""
    run_dir = Path(run_dir)
    path = run_dir / name
    ident = ROW_ID if name == MEASUREMENTS_FILE else EMBEDDING_ID
    if columns is not None:
        columns = list(dict.fromkeys([*columns, *ident]))
    empty = pd.DataFrame(columns=columns or (COLUMNS if name == MEASUREMENTS_FILE else EMBEDDING_COLUMNS))
    main = _read_table_file(path, run_dir, columns) if path.exists() else empty
    files = part_files(run_dir, name) if parts else []
    if not files:
        return main
    frames = [f for f in [main, *(_read_table_file(p, run_dir, columns) for p in files)] if len(f)]
    if not frames:
        return empty
    return pd.concat(frames, ignore_index=True).drop_duplicates(ident, keep="last").reset_index(drop=True)


def read_json(run_dir: Path, name: str) -> Any:
    path = run_dir / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({exc}); delete it and re-run `t2ibias measure {run_dir}`") from None


def read_measure_config(run_dir: Path) -> dict[str, Any] | None:
    """What ``measure.json`` recorded (gate config and fingerprint, measurers), or None before any measure."""
    doc = read_json(run_dir, MEASURE_FILE)
    if doc is not None and (not isinstance(doc, dict) or not isinstance(doc.get("gate_fingerprint"), str)):
        raise UserError(f"{run_dir / MEASURE_FILE}: gate_fingerprint: missing (delete the file and re-run `t2ibias measure {run_dir}`)")
    return doc


def read_measurers(run_dir: Path) -> dict[str, dict[str, Any]]:
    """``measurers.json``: measurer fingerprint → what it is (id, kind, gate, ...)."""
    doc = read_json(run_dir, MEASURERS_FILE)
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise UserError(f"{run_dir / MEASURERS_FILE}: must map measurer fingerprints to their info (delete it and re-run `t2ibias measure {run_dir}`)")
    return doc


# --------------------------------------------------------------------------- one reader for every stage


def spec_classifier(spec: dict[str, Any], where: str = SPEC_FILE) -> ClassifierSpec:
    """The classifier a run spec froze (``classifier_spec``). A run swept before specs froze it holds
    only the summary, and its classifier is looked up by id: the one place that lookup happens."""
    frozen = spec.get("classifier_spec")
    if frozen is None:
        return resolve_classifier_spec(spec["classifier"]["id"])
    return classifier_spec_from_dict(frozen, f"{where}: field classifier_spec")


class RunDir:
    """One run directory: the path of each of its files and typed readers of them, each read once.

    The measure and score stages and the report read the run through one of these; a missing or
    damaged file is one :class:`UserError` line naming the file, the field and the stage to run.
    An instance is meant for one stage: it does not see files written after it read them.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def has(self, name: str) -> bool:
        return self.file(name).is_file()

    def _fix(self, name: str) -> str:
        return f"t2ibias {WRITTEN_BY[name]} {self.path}"

    def _missing(self, name: str) -> UserError:
        return UserError(f"{self.file(name)}: missing (run `{self._fix(name)}` first)")

    # -- sweep's files
    @cached_property
    def spec(self) -> dict[str, Any]:
        return read_spec(self.path)

    @cached_property
    def _prompt_file(self) -> pd.DataFrame:
        return read_prompts(self.path, {})

    @cached_property
    def prompts(self) -> pd.DataFrame:
        """The prompt records the run uses: the first ``limit`` of its prompt sets' records."""
        limit = self.spec.get("limit")
        return self._prompt_file.head(int(limit)).reset_index(drop=True) if limit else self._prompt_file

    @property
    def prompts_cut(self) -> int:
        """Prompts of the run's prompt sets that ``--limit`` left out."""
        return len(self._prompt_file) - len(self.prompts)

    @cached_property
    def jobs(self) -> list[ImageJob]:
        return image_jobs(self.spec, self.prompts)

    @cached_property
    def classifier(self) -> ClassifierSpec:
        """The run's classifier, as its spec froze it (:func:`spec_classifier`)."""
        return spec_classifier(self.spec, str(self.file(SPEC_FILE)))

    def require_columns(self, name: str, frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
        lacking = [c for c in columns if c not in frame.columns]
        if lacking:
            raise UserError(f"{self.file(name)}: lacks column(s) {', '.join(lacking)}; re-run `{self._fix(name)}`")
        return frame

    # -- generate's manifest
    @cached_property
    def store(self) -> ImageStore:
        return ImageStore(self.path)

    @cached_property
    def records(self) -> dict[str, dict[str, Any]]:
        """Manifest rows by image key (the last line of a key wins); one error when there is no manifest."""
        if not self.store.manifest_files():
            raise UserError(f"{self.path}/manifest*.jsonl: missing (run `t2ibias generate {self.path}` first)")
        return self.store.records()

    # -- measure's files
    @cached_property
    def measure_config(self) -> dict[str, Any] | None:
        return read_measure_config(self.path)

    @cached_property
    def measurers(self) -> dict[str, dict[str, Any]]:
        return read_measurers(self.path)

    @cached_property
    def measurer(self) -> str | None:
        """Fingerprint of the CLIP measurer whose rows score reads, as ``measure`` recorded it:
        ``measure.json``'s when it measured with the run's classifier, else the run's classifier
        behind the same gate in ``measurers.json``; None when the run is not measured with it."""
        cfg = self.measure_config
        if cfg is None:
            return None
        mine = self.classifier.fingerprint()
        if (cfg.get("classifier") or {}).get("fingerprint") == mine:
            if not isinstance(cfg.get("measurer"), str):
                raise UserError(f"{self.file(MEASURE_FILE)}: measurer: missing (delete the file and re-run `t2ibias measure {self.path}`)")
            return cfg["measurer"]
        for fp, info in sorted(self.measurers.items()):
            if (isinstance(info, dict) and info.get("kind") == "clip" and info.get("classifier_fingerprint") == mine
                    and info.get("gate_fingerprint") == cfg["gate_fingerprint"]):
                return fp
        return None

    @property
    def has_person_detector(self) -> bool:
        """Whether the recorded gate detects people (then an image with no person box shows nobody)."""
        return bool(((self.measure_config or {}).get("gate") or {}).get("person"))

    @cached_property
    def measurements(self) -> pd.DataFrame:
        return read_measurements(self.path)

    @cached_property
    def embeddings(self) -> pd.DataFrame:
        return read_measurements(self.path, EMBEDDINGS_FILE)

    # -- score's files
    def _json_object(self, name: str, required: bool = True) -> dict[str, Any] | None:
        path = self.file(name)
        if not path.is_file():
            if required:
                raise self._missing(name)
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{path}: unreadable JSON ({e}); re-run `{self._fix(name)}`") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a JSON object; re-run `{self._fix(name)}`")
        return data

    @cached_property
    def labels(self) -> pd.DataFrame:
        """``image_labels.parquet``: one label per image and attribute."""
        path = self.file(IMAGE_LABELS_FILE)
        if not path.is_file():
            raise self._missing(IMAGE_LABELS_FILE)
        try:
            return pd.read_parquet(path)
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise UserError(f"{path}: unreadable parquet ({e}); re-run `{self._fix(IMAGE_LABELS_FILE)}`") from None

    @cached_property
    def metrics(self) -> dict[str, Any]:
        return self._json_object(METRICS_FILE)  # type: ignore[return-value]

    @cached_property
    def instrument(self) -> dict[str, Any] | None:
        return self._json_object(INSTRUMENT_FILE, required=False)

    @cached_property
    def audit(self) -> dict[str, Any] | None:
        """The audit copied into the run (with its ``provenance``), or None when it has none."""
        doc = self._json_object(AUDIT_FILE, required=False)
        if doc is None:
            return None
        for key in ("classifier", "attributes", "provenance"):
            if not isinstance(doc.get(key), dict):
                raise UserError(f"{self.file(AUDIT_FILE)}: field {key}: missing or not an object "
                                f"(attach the audit again: `t2ibias score {self.path} --audit FILE`)")
        return doc


def validate_run(run_dir: Path) -> str:
    """Check a run's spec, prompts and stored images without running anything; one summary line."""
    run = RunDir(run_dir)
    jobs = run.jobs
    store = run.store
    records = store.records()
    status = {j.key: records.get(j.key, {}).get("status", "not generated") for j in jobs}
    for key in (k for k, st in status.items() if st == "ok"):
        store.image_file(records[key])  # a path that leaves the run is an error of its own, not "missing"
    bad = [k for k, st in status.items() if st == "ok" and not store.is_intact(records[k], deep=False)]
    if bad:
        raise UserError(f"{run_dir}: {len(bad)} images are missing or of another size than recorded "
                        f"(run `t2ibias generate {run_dir}` to remake them; `t2ibias validate {run_dir} --deep` also re-hashes)")
    counts = {st: list(status.values()).count(st) for st in ("ok", "blocked", "failed", "not generated")}
    others = ", ".join(f"{n} {st}" for st, n in counts.items() if st != "ok" and n)
    return (f"run {run.spec['fingerprint']}: {counts['ok']} of {len(jobs)} images intact"
            + (f" ({others})" if others else "") + "; sizes checked, --deep re-hashes")
