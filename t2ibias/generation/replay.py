"""``--model replay:DIR``: a folder of images made elsewhere (an API model, an export of another
tool) measured as a run of its own.

``DIR/index.csv`` or ``DIR/index.jsonl`` lists the images, one row each, with either
``image, prompt_text`` (optionally ``image_index``) or ``image, prompt_id, image_index`` (ids of
the records of ``--prompts SET``). Planning a run reads the index and every file it names once:

* each usable row becomes one image job of a prompt record: the index's own prompts (one record
  per distinct text), or, with ``--prompts SET``, that set's records matched by text (whitespace
  collapsed, case kept) or by id, so a replayed run shares prompt ids and texts with generated
  runs of the same set;
* the generator's weight identity is the sha256 of the index and a digest of every listed file's
  sha256, so an image key (generator fingerprint, prompt text, image index) is stable as long as
  the index and the files are, and an edited index or a replaced file never reuses stale images
  (the run's spec changes, as it does for changed weights);
* rows it cannot use are counted and named in ``replay_problems.json`` (and one summary line):
  a missing file, a prompt the set does not hold, a duplicate (the same file, the same bytes or
  the same prompt and image index twice), a file that is not a readable image, a malformed row.
  Missing and unreadable images stay images of the run, counted as failed like images a
  generator failed to make; unknown prompts, duplicates and malformed rows enter no prompt.

Generating copies each image into the content-addressed store, decoded and re-encoded as PNG
(what the store and every later stage read), with its source file and sha256 in its manifest
line. Files are read as images only (PNG, JPEG, WebP, GIF, BMP, TIFF: formats that carry no code),
and an image of more than :data:`MAX_PIXELS` pixels is refused before it is decoded.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t2ibias.core.errors import UserError
from t2ibias.core.fingerprint import file_sha256
from t2ibias.core.files import atomic_write_text
from t2ibias.generation.diffusers_adapter import ResolvedWeights
from t2ibias.models.generator_spec import GeneratorSpec
from t2ibias.prompts.types import PromptRecord
from t2ibias.store.image_store import confined_path, image_seeds

REPLAY_PREFIX = "replay:"
INDEX_NAMES = ("index.csv", "index.jsonl")
#: Formats a replayed file may have: decoders of pixel data only.
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
#: Largest image accepted (pixels): 8192², four times a 4096² export; larger ones are refused
#: before decoding (a decompression bomb is a small file that decodes to gigabytes).
MAX_PIXELS = 8192 * 8192
#: Problem kinds, in the order the summary names them.
MISSING, UNREADABLE, UNKNOWN_PROMPT, DUPLICATE, BAD_ROW = "missing", "unreadable", "unknown_prompt", "duplicate", "bad_row"
KINDS = (MISSING, UNREADABLE, UNKNOWN_PROMPT, DUPLICATE, BAD_ROW)
#: Problems whose rows stay images of the run (counted as failed); the others enter no prompt.
FAILED_KINDS = (MISSING, UNREADABLE)
#: Set id of the prompt records a replay run takes from its index (no ``--prompts``).
INDEX_SET_ID = "replay_index"


def is_replay(model: Any) -> bool:
    return isinstance(model, str) and model.startswith(REPLAY_PREFIX)


def is_replay_weights(weights_identity: str) -> bool:
    return weights_identity.startswith(REPLAY_PREFIX)


def _norm(text: str) -> str:
    return " ".join(text.split())




def open_image(data: bytes, where: str) -> Any:
    """Decode image bytes to an RGB PIL image, or raise ``ValueError`` saying why not: not one of
    :data:`FORMATS`, more than :data:`MAX_PIXELS` pixels (checked from the header, before
    decoding), truncated or corrupt. EXIF orientation is applied, as an image viewer shows it."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=FORMATS)
            if img.width * img.height > MAX_PIXELS:
                raise ValueError(f"{where}: {img.width}×{img.height} pixels, more than {MAX_PIXELS:,} (downscale it)")
            img.load()
            img = ImageOps.exif_transpose(img)
            return img.convert("RGB")
        except UnidentifiedImageError:
            raise ValueError(f"{where}: not an image of a known format ({', '.join(FORMATS)})") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ValueError(f"{where}: refused as a decompression bomb ({exc})") from None
        except (OSError, SyntaxError, ValueError) as exc:
            if str(exc).startswith(where):
                raise
            raise ValueError(f"{where}: unreadable ({type(exc).__name__}: {exc})") from None


def _header_check(path: Path, where: str) -> str | None:
    """Why ``path`` is not a usable image, from its header alone (format, size), or None."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path, formats=FORMATS) as img:
                if img.width * img.height > MAX_PIXELS:
                    return f"{where}: {img.width}×{img.height} pixels, more than {MAX_PIXELS:,} (downscale it)"
        except UnidentifiedImageError:
            return f"{where}: not an image of a known format ({', '.join(FORMATS)})"
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            return f"{where}: refused as a decompression bomb ({exc})"
        except (OSError, SyntaxError, ValueError) as exc:
            return f"{where}: unreadable ({type(exc).__name__}: {exc})"
    return None


# -- reading the index ----------------------------------------------------------------------------

def find_index(root: Path) -> Path:
    found = [root / n for n in INDEX_NAMES if (root / n).is_file()]
    if not found:
        raise UserError(f"--model replay:{root}: no index.csv or index.jsonl in the folder (write one with columns "
                        "image, prompt_text — or image, prompt_id, image_index — one row per image)")
    if len(found) > 1:
        raise UserError(f"--model replay:{root}: holds both index.csv and index.jsonl (keep the one that lists the images)")
    return found[0]


def _read_rows(index: Path) -> tuple[list[str], list[tuple[int, dict[str, Any] | None, str]]]:
    """Columns and ``(line, row or None, why)`` per data row of a CSV or JSON-lines index."""
    try:
        text = index.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{index}: not UTF-8 text ({exc.reason} at byte {exc.start}; save it as UTF-8)") from None
    except OSError as exc:
        raise UserError(f"{index}: unreadable ({exc.strerror or exc})") from None
    rows: list[tuple[int, dict[str, Any] | None, str]] = []
    if index.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        try:
            columns = [c.strip() for c in reader.fieldnames or []]
            reader.fieldnames = columns
            line = reader.line_num
            for row in reader:
                if None in row:
                    rows.append((line + 1, None, f"{len(row[None]) + len(columns)} fields where the header has {len(columns)}"))
                else:
                    rows.append((line + 1, dict(row), ""))
                line = reader.line_num
        except csv.Error as exc:
            raise UserError(f"{index}: line {reader.line_num}: not valid CSV ({exc}; quote fields that hold commas)") from None
        return columns, rows
    columns_seen: dict[str, None] = {}
    for n, line_text in enumerate(text.splitlines(), 1):
        if not line_text.strip():
            continue
        try:
            row = json.loads(line_text)
        except ValueError as exc:
            rows.append((n, None, f"not JSON ({exc})"))
            continue
        if not isinstance(row, dict):
            rows.append((n, None, f"a JSON {type(row).__name__}, not an object"))
            continue
        columns_seen.update(dict.fromkeys(row))
        rows.append((n, row, ""))
    return list(columns_seen), rows


@dataclass
class IndexRow:
    line: int
    image: str
    prompt_text: str | None
    prompt_id: str | None
    image_index: int | None


@dataclass
class ReplayPlan:
    """What planning a ``replay:DIR`` run found: the spec of its generator, its prompt records (each
    with the image indices the index gives it), one entry per usable row and the problems."""

    root: Path
    index: Path
    index_sha256: str
    spec: GeneratorSpec
    weights: ResolvedWeights
    records: list[PromptRecord]
    #: prompt_id → sorted image indices.
    indices: dict[str, list[int]]
    #: One dict per image of the run: prompt_id, image_index, image, source_sha256, problem.
    images: list[dict[str, Any]]
    problems: list[dict[str, Any]]
    n_rows: int
    #: The ``prompt_sets`` rows of spec.json.
    prompt_sets: list[dict[str, Any]] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {k: sum(p["problem"] == k for p in self.problems) for k in KINDS}

    @property
    def n_images(self) -> int:
        return len(self.images)

    @property
    def max_images(self) -> int:
        return max(len(v) for v in self.indices.values())

    def spec_entry(self) -> dict[str, Any]:
        """The ``replay`` object of spec.json."""
        return {"dir": str(self.root), "index": self.index.name, "index_sha256": self.index_sha256,
                "rows": self.n_rows, "images": self.n_images, "prompts": len(self.records), "problems": self.counts}

    def summary_line(self) -> str:
        return problems_line(self.problems_doc())

    def problems_doc(self) -> dict[str, Any]:
        return {"index": str(self.index), "index_sha256": self.index_sha256, "rows": self.n_rows,
                "images": self.n_images, "prompts": len(self.records), "counts": self.counts, "problems": self.problems}

    def prompt_frame(self, prompts: Any) -> Any:
        """``prompts`` (the records' frame) with each prompt's ``image_indices``."""
        prompts = prompts.copy()
        prompts["image_indices"] = [self.indices[p] for p in prompts["prompt_id"]]
        return prompts

    def write(self, run_dir: Path) -> None:
        """``replay_index.parquet`` and ``replay_problems.json`` in the run."""
        import pandas as pd

        from t2ibias.store.rundir import REPLAY_INDEX_FILE, REPLAY_PROBLEMS_FILE, write_parquet

        frame = pd.DataFrame(self.images, columns=["prompt_id", "image_index", "line", "image", "source_sha256", "problem"])
        write_parquet(run_dir / REPLAY_INDEX_FILE, frame)
        atomic_write_text(run_dir / REPLAY_PROBLEMS_FILE, json.dumps(self.problems_doc(), indent=2, ensure_ascii=False) + "\n")


def problems_line(doc: dict[str, Any]) -> str:
    """``replay: N index rows → M images of P prompts; 1 missing, ... (see FILE)``."""
    labels = {MISSING: "missing", UNREADABLE: "unreadable", UNKNOWN_PROMPT: "unknown prompt",
              DUPLICATE: "duplicate", BAD_ROW: "malformed"}
    counts = doc.get("counts", {})
    parts = [f"{counts[k]} {labels[k]}" for k in KINDS if counts.get(k)]
    head = f"replay: {doc['rows']} index rows → {doc['images']} images of {doc['prompts']} prompts"
    if not parts:
        return head + "; every row used"
    failed = sum(counts.get(k, 0) for k in FAILED_KINDS)
    tail = f" (counted as {failed} failed image{'' if failed == 1 else 's'})" if failed else ""
    return f"{head}; rows with problems: {', '.join(parts)}{tail}"


def _parse(index: Path, line: int, row: dict[str, Any], by_text: bool) -> IndexRow:
    """One row's fields, or ``ValueError`` saying which is wrong."""
    def text(name: str, required: bool = True) -> str | None:
        value = row.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise ValueError(f"field {name} is empty")
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and name == "prompt_id":
            value = str(value)
        if not isinstance(value, str):
            raise ValueError(f"field {name}: {json.dumps(value)[:40]} is not text")
        return value.strip()

    image = text("image")
    idx_raw = row.get("image_index")
    image_index = None
    if idx_raw is not None and not (isinstance(idx_raw, str) and not idx_raw.strip()):
        try:
            image_index = int(str(idx_raw).strip()) if not isinstance(idx_raw, bool) else None
        except ValueError:
            image_index = None
        if image_index is None or image_index < 0 or (isinstance(idx_raw, float) and idx_raw != int(idx_raw)):
            raise ValueError(f"field image_index: {json.dumps(idx_raw)[:40]} is not a whole number ≥ 0")
    elif not by_text:
        raise ValueError("field image_index is empty")
    if by_text:
        return IndexRow(line, image, text("prompt_text"), None, image_index)  # type: ignore[arg-type]
    return IndexRow(line, image, None, text("prompt_id"), image_index)  # type: ignore[arg-type]


def _problem(line: int, image: str | None, kind: str, detail: str) -> dict[str, Any]:
    return {"line": line, "image": image, "problem": kind, "detail": detail}


def plan_replay(model: str, prompt_sets: list[str], flag: str = "--model") -> ReplayPlan:
    """Read ``replay:DIR``'s index and files; refuse (one line) a folder or index that gives no
    image, misses columns, or names a path outside the folder."""
    root_arg = model[len(REPLAY_PREFIX):]
    if not root_arg.strip():
        raise UserError(f"{flag} {model}: name the folder of images (--model replay:DIR)")
    root = Path(root_arg).expanduser()
    if not root.is_dir():
        raise UserError(f"{flag} {model}: {root} is not a folder (--model replay:DIR, DIR holding the images and index.csv)")
    root = root.resolve()
    index = find_index(root)
    index_sha = file_sha256(index)
    columns, raw = _read_rows(index)
    by_text = "prompt_text" in columns
    if "image" not in columns or not (by_text or {"prompt_id", "image_index"} <= set(columns)):
        raise UserError(f"{index}: columns {', '.join(columns) or '(none)'}; need image and prompt_text, or image, prompt_id "
                        "and image_index (one row per image)")
    if not raw:
        raise UserError(f"{index}: lists no image (one row per image: image, prompt_text)")
    if not by_text and not prompt_sets:
        raise UserError(f"{index}: gives prompt ids, not texts; pass --prompts SET, the set whose records they name "
                        "(or give a prompt_text column)")

    problems: list[dict[str, Any]] = []
    rows: list[IndexRow] = []
    for line, row, why in raw:
        if row is None:
            problems.append(_problem(line, None, BAD_ROW, f"{index.name}: line {line}: {why}"))
            continue
        try:
            parsed = _parse(index, line, row, by_text)
        except ValueError as exc:
            image = row.get("image") if isinstance(row.get("image"), str) else None
            problems.append(_problem(line, image, BAD_ROW, f"{index.name}: line {line}: {exc}"))
            continue
        try:
            confined_path(root, parsed.image, "image")
        except UserError:
            raise UserError(f"{index}: line {line}: image {parsed.image!r} leads outside {root} (absolute, with '..', or "
                            "through a link); list files inside the folder") from None
        rows.append(parsed)

    # prompt records: the set's (matched by text or id), or one per distinct text of the index
    sets_rows: list[dict[str, Any]] = []
    if prompt_sets:
        from t2ibias.prompts.bank import expand, resolve_prompt_set

        sets = [resolve_prompt_set(name) for name in prompt_sets]
        if len({s.id for s in sets}) != len(sets):
            raise UserError("--prompts: the same set is named twice (name each set once)")
        known = [r for s in sets for r in expand(s)]
        sets_rows = [{"id": s.id, "version": s.version, "sha256": s.sha256, "path": str(s.path)} for s in sets]
        lookup: dict[str, list[PromptRecord]] = {}
        for rec in known:
            lookup.setdefault(_norm(rec.text) if by_text else rec.prompt_id, []).append(rec)
        where = f"--prompts {'+'.join(prompt_sets)}"
    else:
        lookup = {}
        for r in rows:
            t = _norm(r.prompt_text or "")
            if t not in lookup:
                pid = "replay-" + hashlib.sha256(t.encode()).hexdigest()[:12]
                lookup[t] = [PromptRecord(pid, INDEX_SET_ID, 1, "replay", t, "index", "none", t)]
        sets_rows = [{"id": INDEX_SET_ID, "version": 1, "sha256": index_sha, "path": str(index)}]
        where = "the index"

    seen_files: dict[str, int] = {}
    seen_bytes: dict[str, int] = {}
    seen_slots: dict[tuple[str, int], int] = {}
    next_index: dict[str, int] = {}
    images: list[dict[str, Any]] = []
    used: dict[str, PromptRecord] = {}
    for r in rows:
        key = _norm(r.prompt_text) if by_text else r.prompt_id  # type: ignore[arg-type]
        recs = lookup.get(key)  # type: ignore[arg-type]
        if not recs:
            what = f"prompt {r.prompt_text!r}" if by_text else f"prompt_id {r.prompt_id!r}"
            problems.append(_problem(r.line, r.image, UNKNOWN_PROMPT, f"{index.name}: line {r.line}: {what} is not in {where}"))
            continue
        path = root / r.image
        resolved = str(path.resolve())
        if resolved in seen_files:
            problems.append(_problem(r.line, r.image, DUPLICATE, f"{index.name}: line {r.line}: {r.image} is listed "
                                     f"already on line {seen_files[resolved]}"))
            continue
        sha, problem = None, None
        if not path.is_file():
            problem = MISSING
            detail = f"{index.name}: line {r.line}: {r.image}: no such file in {root}"
        else:
            try:
                sha = file_sha256(path)
            except OSError as exc:
                problem, detail = UNREADABLE, f"{index.name}: line {r.line}: {r.image}: unreadable ({exc.strerror or exc})"
            else:
                if sha in seen_bytes:
                    problems.append(_problem(r.line, r.image, DUPLICATE, f"{index.name}: line {r.line}: {r.image} has the "
                                             f"same bytes as the image on line {seen_bytes[sha]}"))
                    continue
                why = _header_check(path, r.image)
                if why:
                    problem, detail = UNREADABLE, f"{index.name}: line {r.line}: {why}"
        slots = []
        for rec in recs:
            i = r.image_index if r.image_index is not None else next_index.get(rec.prompt_id, 0)
            if (rec.prompt_id, i) in seen_slots:
                slots = None
                break
            slots.append((rec, i))
        if slots is None:
            problems.append(_problem(r.line, r.image, DUPLICATE, f"{index.name}: line {r.line}: image {i} of "
                                     f"{key!r} is given already on line {seen_slots[(recs[0].prompt_id, i)]}"))
            continue
        seen_files[resolved] = r.line
        if sha is not None:
            seen_bytes[sha] = r.line
        if problem:
            problems.append(_problem(r.line, r.image, problem, detail))
        for rec, i in slots:
            seen_slots[(rec.prompt_id, i)] = r.line
            next_index[rec.prompt_id] = max(next_index.get(rec.prompt_id, 0), i + 1)
            used.setdefault(rec.prompt_id, rec)
            images.append({"prompt_id": rec.prompt_id, "image_index": i, "line": r.line, "image": r.image,
                           "source_sha256": sha, "problem": detail if problem else None})

    usable = [im for im in images if im["problem"] is None]
    if not usable:
        counts = {k: sum(p["problem"] == k for p in problems) for k in KINDS}
        said = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items() if n)
        first = problems[0]["detail"] if problems else ""
        raise UserError(f"{index}: none of its {len(raw)} rows gives a usable image ({said}; first: {first})")
    order = {pid: n for n, pid in enumerate(lookup_order(lookup))}
    records = sorted(used.values(), key=lambda rec: order[rec.prompt_id])
    indices: dict[str, list[int]] = {}
    for im in images:
        indices.setdefault(im["prompt_id"], []).append(im["image_index"])
    indices = {k: sorted(v) for k, v in indices.items()}
    images.sort(key=lambda im: (order[im["prompt_id"]], im["image_index"]))
    content = hashlib.sha256(json.dumps([[im["image"], im["source_sha256"]] for im in images]).encode()).hexdigest()
    spec = GeneratorSpec(
        id=f"replay:{root.name}", source=f"{REPLAY_PREFIX}{root}", pipeline="replay", revision=index_sha[:12], dtype="n/a",
        steps=0, guidance=None, height=0, width=0,  # type: ignore[arg-type]  # made elsewhere, with settings unknown here
        licence="unknown (images made elsewhere: check the terms of the model that made them)",
        notes=(f"images made outside t2ibias, replayed from {root} as listed by {index.name} (sha256 {index_sha[:12]}); "
               "the model that made them, its settings and seeds are unknown here"),
    )
    weights = ResolvedWeights("", None, f"{REPLAY_PREFIX}{index_sha[:16]}:{content[:16]}", "")
    return ReplayPlan(root, index, index_sha, spec, weights, records, indices, images, sorted(problems, key=lambda p: p["line"]),
                      len(raw), sets_rows)


def lookup_order(lookup: dict[str, list[PromptRecord]]) -> list[str]:
    """Prompt ids in the order of the set (or of first appearance in the index)."""
    out: dict[str, None] = {}
    for recs in lookup.values():
        for rec in recs:
            out.setdefault(rec.prompt_id, None)
    return list(out)


# -- generating: copying the images into the store -------------------------------------------------

@dataclass
class ReplayedImage:
    """One image of the index as the generate stage takes it: the image, or why it failed."""

    image: Any
    blocked: bool = False
    error: str | None = None
    #: Manifest fields: the source file and its sha256.
    source: dict[str, Any] = field(default_factory=dict)


class ReplayGenerator:
    """Gives the generate stage each job's image from the replay folder, checked against the sha256
    recorded when the run was planned (a file replaced since then fails, and says so)."""

    def __init__(self, run_dir: Path, spec: dict[str, Any]) -> None:
        import pandas as pd

        from t2ibias.store.rundir import REPLAY_INDEX_FILE

        entry = spec.get("replay")
        if not isinstance(entry, dict) or not isinstance(entry.get("dir"), str):
            raise UserError(f"{run_dir}/spec.json: field replay: missing or not an object (start the run again with "
                            "`t2ibias sweep --model replay:DIR`)")
        self.root = Path(entry["dir"])
        path = Path(run_dir) / REPLAY_INDEX_FILE
        try:
            table = pd.read_parquet(path)
        except Exception as exc:
            raise UserError(f"{path}: missing or unreadable ({type(exc).__name__}); start the run again with "
                            f"`t2ibias sweep --model replay:{self.root} --force`") from None
        base = int(spec["base_seed"])
        self.rows: dict[tuple[str, int], dict[str, Any]] = {}
        from t2ibias.store.rundir import read_prompts

        texts = dict(zip(*[read_prompts(Path(run_dir), spec)[c] for c in ("prompt_id", "text")]))
        for row in table.to_dict("records"):
            pid = row["prompt_id"]
            if pid not in texts:
                continue
            seed = image_seeds(base, pid, [int(row["image_index"])])[0]
            self.rows[(texts[pid], seed)] = row

    def generate(self, texts: list[str], seeds: list[int]) -> list[ReplayedImage]:
        return [self._one(t, s) for t, s in zip(texts, seeds)]

    def _one(self, text: str, seed: int) -> ReplayedImage:
        row = self.rows.get((text, seed))
        if row is None:
            return ReplayedImage(None, error=f"no row of the replay index gives this image of {text!r}")
        sha = row["source_sha256"] if isinstance(row["source_sha256"], str) else None
        source = {"source": row["image"], "source_sha256": sha}
        if isinstance(row["problem"], str) and row["problem"]:  # missing or unreadable when planned
            return ReplayedImage(None, error=row["problem"], source=source)
        try:
            path = confined_path(self.root, row["image"], "image")
            data = path.read_bytes()
        except UserError:
            return ReplayedImage(None, error=f"{row['image']}: now leads outside {self.root}", source=source)
        except OSError as exc:
            return ReplayedImage(None, error=f"{row['image']}: unreadable ({exc.strerror or exc})", source=source)
        if hashlib.sha256(data).hexdigest() != sha:
            return ReplayedImage(None, error=f"{row['image']}: changed since the run was planned (start a new run, or "
                                             "pass --force to replan this one)", source=source)
        try:
            image = open_image(data, str(row["image"]))
        except ValueError as exc:
            return ReplayedImage(None, error=str(exc), source=source)
        return ReplayedImage(image, source=source)


def note_generate_failures(run_dir: Path) -> None:
    """Add to ``replay_problems.json`` the images that failed only when decoded (truncated or corrupt
    data behind a good header), so the file names every image the run could not use."""
    from t2ibias.store.image_store import FAILED, ImageStore
    from t2ibias.store.rundir import REPLAY_PROBLEMS_FILE

    path = Path(run_dir) / REPLAY_PROBLEMS_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    import pandas as pd

    from t2ibias.store.rundir import REPLAY_INDEX_FILE

    try:
        lines = dict(zip(*[pd.read_parquet(Path(run_dir) / REPLAY_INDEX_FILE)[c] for c in ("image", "line")]))
    except Exception:  # the index copy is gone: the problems file stays as planned
        return
    listed = {p.get("image") for p in doc.get("problems", [])}
    added = False
    for row in ImageStore(run_dir).records().values():
        if row.get("status") == FAILED and row.get("source") in lines and row["source"] not in listed:
            doc["problems"].append(_problem(int(lines[row["source"]]), row["source"], UNREADABLE, str(row.get("error"))))
            doc["counts"][UNREADABLE] = doc["counts"].get(UNREADABLE, 0) + 1
            listed.add(row["source"])
            added = True
    if added:
        doc["problems"].sort(key=lambda p: p["line"])
        atomic_write_text(path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
