"""The run directory contract: the files a run holds, who writes them, and the readers every
stage and the report use.

Each stage reads only the files written by the stage before it, so any stage can be re-run
alone (``t2ibias generate|measure|score|report DIR``) and the report reads outputs only.
"""

from __future__ import annotations

import io
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from t2ibias.core.errors import UserError
from t2ibias.core.files import atomic_write_bytes
from t2ibias.models.generator_spec import GeneratorSpec
from t2ibias.store.image_store import MANIFEST_GLOB, image_keys, image_seeds

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
REPORT_FILE = "report.html"
MODEL_CARD_FILE = "model_card.md"


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
            IMAGE_LABELS_FILE, METRICS_FILE, METRICS_CSV_FILE, INSTRUMENT_FILE, REPORT_FILE, MODEL_CARD_FILE)


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


def image_jobs(spec: dict[str, Any], prompts: pd.DataFrame) -> list[ImageJob]:
    """Every image of the run, prompt-major; keys and seeds depend on nothing but the spec."""
    gfp = spec["generator_fingerprint"]
    params = GeneratorSpec(**{k: v for k, v in spec["model"].items()}).generation_params()
    indices = list(range(int(spec["n_seeds"])))
    base_seed = int(spec["base_seed"])
    jobs = []
    for pid, text in zip(prompts["prompt_id"], prompts["text"]):
        seeds = image_seeds(base_seed, pid, indices)
        keys = image_keys(gfp, text, seeds, params)
        jobs.extend(ImageJob(k, pid, text, i, s) for k, i, s in zip(keys, indices, seeds))
    return jobs
