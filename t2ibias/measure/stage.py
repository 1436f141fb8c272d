"""The measure stage: gate every stored image, classify its units, cache rows.

Rows go to ``measurements.parquet``, one per (image, unit, attribute), where a unit is the whole
image, one detected person (with a YOLO person gate) or one detected face. They are keyed by
(image key, measurer fingerprint), and a measurer fingerprint covers the gate (its settings and
weights) and the classifier: a re-run measures only images it has not seen with the same ones.

The classifier is the one the run's ``spec.json`` froze. Which gate and measurer a run was measured
with is recorded once, in ``measure.json`` (the score stage reads it and never recomputes it);
every measurer whose rows are stored is described in ``measurers.json`` (fingerprint → info).
Decoding, gating and CLIP preprocessing of the next batches run in worker threads while the
classifier encodes the current one. On a CUDA GPU the CLIP image tower runs under float16 autocast,
and the measurer fingerprint says so (:func:`clip_precision`); elsewhere it is float32, as before.

Rows are appended, never rewritten: every ``CHECKPOINT_EVERY`` images a worker writes its new rows
as part files, and the end of the stage compacts them into the two tables once
(:mod:`t2ibias.measure.table`). :func:`plan_measure`, :func:`measure_keys` and
:func:`finish_measure` are the same stage split for an executor that measures on other processes.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from t2ibias.core.version import __version__
from t2ibias.core.errors import UserError
from t2ibias.core.fingerprint import fingerprint
from t2ibias.core.prefetch import prefetch_map
from t2ibias.models.classifier_spec import ClassifierSpec, resolve_classifier_spec
from t2ibias.models.clip_zeroshot import CLIPAttributeClassifier, Prediction
from t2ibias.measure.gate import DEFAULT_FACE_DETECTOR, Box, PersonFaceGate, create_gate
from t2ibias.measure.measurers import Measurer
from t2ibias.store.image_store import OK, ImageStore
from t2ibias.core.files import atomic_write_text
from t2ibias.store.lock import RunLock
from t2ibias.measure.table import UNITS, PartWriter, compact_tables, record_measurers
from t2ibias.store.rundir import (
    COLUMNS,
    EMBEDDING_COLUMNS,
    EMBEDDINGS_FILE,
    MEASURE_FILE,
    RunDir,
    read_json,
    read_measurements,
    read_measurers,
)

CHECKPOINT_EVERY = 256  # images between part files of a worker
#: The worker name of the stage's own (in-process) part files.
LOCAL_WORKER = "local"


def default_workers() -> int:
    """Threads that decode, gate and preprocess ahead of the classifier by default: half the CPU
    cores, from 2 to 8 (the face gate, PNG decoding and resizing release the GIL; the other half
    is left to torch and to generation)."""
    return max(2, min(8, (os.cpu_count() or 2) // 2))


def clip_precision(device: str) -> str:
    """The precision the CLIP image tower runs in on ``device``: float16 autocast on a CUDA GPU
    (tensor-core matmuls; layer norms and softmax stay float32 under autocast), float32 elsewhere
    (CPU half-precision kernels are slow or missing). Label embeddings are float32 everywhere."""
    return "float16" if str(device).split(":")[0] == "cuda" else "float32"


def measurer_fingerprint(gate: Any, cspec: ClassifierSpec, precision: str = "float32") -> str:
    """The CLIP measurer: ``gate`` is anything with ``fingerprint()`` (a gate, or its recorded
    fingerprint). A precision other than float32 is part of it, so GPU rows never pass for CPU
    rows; float32 adds nothing, so float32 fingerprints are those of earlier versions."""
    gfp = gate if isinstance(gate, str) else gate.fingerprint()
    payload = {"gate": gfp, "classifier": cspec.fingerprint()}
    if precision != "float32":
        payload["precision"] = precision
    return fingerprint(payload)


def crop_measurer_fingerprint(gate: Any, measurer: Measurer) -> str:
    """A crop measurer's rows depend on the crops the gate cut and on the measurer itself."""
    gfp = gate if isinstance(gate, str) else gate.fingerprint()
    return fingerprint({"gate": gfp, "measurer": measurer.fingerprint()})




def _open_image(path: Path, run_dir: Path) -> Any:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    # besides PIL's own errors: importing ultralytics patches Image.open to retry unknown files
    # with an optional HEIF plugin, which then fails with ImportError
    except Exception as exc:
        raise UserError(
            f"{path}: cannot read image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            f"delete it and run `t2ibias generate {run_dir}` to regenerate it, then measure again"
        ) from None


def _rows(key: str, measurer: str, unit: str, face_index: int, box: Any, preds: dict[str, Any]) -> list[dict[str, Any]]:
    bx = (box.x, box.y, box.w, box.h) if box is not None else (math.nan,) * 4
    return [
        {
            "key": key, "measurer": measurer, "unit": unit, "face_index": face_index,
            "box_x": bx[0], "box_y": bx[1], "box_w": bx[2], "box_h": bx[3],
            "attribute": attr, "label": p.label, "top_label": p.top_label,
            "score": p.score, "margin": p.margin, "probs": json.dumps(p.probs, sort_keys=True),
        }
        for attr, p in preds.items()
    ]


@dataclass
class _Unit:
    unit: str
    index: int
    box: Box | None
    crop: Any


@dataclass
class _Prepared:
    key: str
    units: list[_Unit] = field(default_factory=list)
    n_people: int = 0
    clip: bool = True  # the CLIP measurer still needs this image
    extras: tuple[int, ...] = ()  # indices of the crop measurers that still need it
    error: UserError | None = None

    @property
    def faces(self) -> list[_Unit]:
        return [u for u in self.units if u.unit == "face"]


def _nonempty(crop: Any) -> bool:
    return crop is not None and crop.width > 0 and crop.height > 0


def measure_stage(
    run_dir: Path,
    device: str = "auto",
    batch_size: int = 16,
    classifier: str | None = None,
    progress: Callable[[int, int], Callable[[int], None]] | None = None,
    *,
    person_detector: str | None = None,
    person_conf: float | None = None,
    extra_measurers: Sequence[Measurer] = (),
    workers: int | None = None,
    fairface_csv: str | Path | None = None,
    face_detector: str | None = None,
) -> dict[str, int]:
    """Measure every intact image not yet measured by this gate with this classifier (and each of
    ``extra_measurers``, on every face crop).

    ``person_detector`` puts a YOLO person gate in front of the face gate: a local ``.pt`` file or
    an ultralytics release name; ``"none"`` removes it; None keeps the one the run was last
    measured with (none for a new run). ``person_conf`` is its confidence threshold (default
    0.25, or the recorded one). ``workers`` threads decode, gate and preprocess upcoming batches
    (default :func:`default_workers`).
    ``fairface_csv`` is a CSV of FairFace's ``predict.py`` to import first. ``classifier`` (an id
    or YAML file) measures with another classifier than the one the run's spec froze.
    ``face_detector`` is a registered face detector (``t2ibias ls gates``); None keeps the one the
    run was last measured with (``haar`` for a new run).

    Everything the stage needs (gate weights, classifier weights, crop measurers) is opened
    before anything is written, so bad input leaves the run as it was; ``measure.json``, which
    names the gate later stages use, is written last.
    """
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1")
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise UserError(f"workers {workers}: must be at least 1")
    run_dir = Path(run_dir)
    with RunLock(run_dir, "measure"):
        return _measure(run_dir, device, batch_size, classifier, progress, person_detector, person_conf,
                        list(extra_measurers), workers, fairface_csv, face_detector)


def open_measurers(gate: PersonFaceGate, extras: Sequence[Measurer] = (), cspec: ClassifierSpec | None = None) -> None:
    """Open every weight file the gate, the crop measurers and (given ``cspec``) the classifier
    need, now: a missing or bad one fails before anything is written."""
    gate.fingerprint()
    load_face = getattr(gate.face, "load", None)
    if callable(load_face):  # a detector's model files: a corrupt one fails here
        load_face()
    if gate.person is not None:
        gate.person._load()
    for m in extras:
        m.fingerprint()
        load = getattr(m, "load", None)
        if callable(load):
            load()
    if cspec is not None:
        from t2ibias.core.hub import quiet_hub
        from t2ibias.models.clip_zeroshot import ensure_classifier_weights

        with quiet_hub():
            ensure_classifier_weights(cspec)


def _open_job(run: RunDir, dev: str, batch_size: int, classifier: str | None, person_detector: str | None,
              person_conf: float | None, extras: list[Measurer], precision: str | None = None,
              face_detector: str | None = None) -> _MeasureJob:
    """The gate and measurers of a pass, with every weight file opened and the stored tables read once
    (a damaged one fails here, before anything is written)."""
    cspec = resolve_classifier_spec(classifier) if classifier else run.classifier
    recorded = ((run.measure_config or {}).get("gate") or {}).get("person") or {}
    if person_detector is None and recorded:
        person_detector = recorded["weights"]
        person_conf = recorded.get("conf", 0.25) if person_conf is None else person_conf
    if face_detector is None:  # the run's last face gate, haar for a new run
        face_detector = ((run.measure_config or {}).get("gate") or {}).get("face", {}).get("kind") or DEFAULT_FACE_DETECTOR
    gate = create_gate(person_detector, 0.25 if person_conf is None else person_conf, dev, face_detector)
    job = _MeasureJob(run, gate, cspec, extras, batch_size, clip_precision(dev) if precision is None else precision)
    job.person_detector, job.person_conf = person_detector or "none", 0.25 if person_conf is None else person_conf
    job.face_detector = face_detector
    open_measurers(gate, extras, cspec)
    read_measurements(run.path)
    read_measurements(run.path, EMBEDDINGS_FILE)
    read_measurers(run.path)
    return job


def _measure(run_dir: Path, device: str, batch_size: int, classifier: str | None,
             progress: Callable[[int, int], Callable[[int], None]] | None, person_detector: str | None,
             person_conf: float | None, extras: list[Measurer], workers: int,
             fairface_csv: str | Path | None, face_detector: str | None = None) -> dict[str, int]:
    from t2ibias.core.device import resolve_device

    run = RunDir(run_dir)
    dev = resolve_device(device)
    job = _open_job(run, dev, batch_size, classifier, person_detector, person_conf, extras, face_detector=face_detector)
    imported = 0
    if fairface_csv is not None:
        from t2ibias.measure.fairface import import_fairface_csv

        imported = import_fairface_csv(run_dir, fairface_csv)
    todo = job.plan()
    if fairface_csv is not None:
        job.result["fairface_imported"] = imported
    if todo:
        job.start_classifier(dev, todo)
        advance = progress(len(todo), job.result["cached"]) if progress else (lambda n: None)
        job.run_batches([todo[i : i + batch_size] for i in range(0, len(todo), batch_size)], workers, advance,
                        PartWriter(run_dir, LOCAL_WORKER))
    compact_tables(run_dir, [j.key for j in run.jobs])
    job.record_config()
    _raise_errors([str(e) for e in job.errors])
    return job.result


def _raise_errors(errors: Sequence[str]) -> None:
    if errors:
        more = f" ({len(errors) - 1} more unreadable images)" if len(errors) > 1 else ""
        raise UserError(f"{errors[0]}{more}")


# --------------------------------------------------------------------------- the stage on other processes


@dataclass(frozen=True)
class MeasurePlan:
    """What a driver decided before handing images to workers (picklable: plain values and the crop
    measurers). ``keys`` are the images some measurer still needs, in the run's job order;
    ``measurer`` the CLIP measurer fingerprint every worker must reproduce; ``config`` the
    ``measure.json`` :func:`finish_measure` writes."""

    run_dir: str
    device: str
    batch_size: int
    classifier: str | None
    person_detector: str
    person_conf: float
    extra_measurers: tuple[Measurer, ...]
    measurer: str
    keys: tuple[str, ...]
    cached: int
    config: dict[str, Any]
    face_detector: str = DEFAULT_FACE_DETECTOR


def plan_measure(run_dir: Path, device: str = "auto", batch_size: int = 16, classifier: str | None = None, *,
                 person_detector: str | None = None, person_conf: float | None = None,
                 extra_measurers: Sequence[Measurer] = (), worker_device: str | None = None,
                 face_detector: str | None = None) -> MeasurePlan:
    """Driver side of a distributed measure, step 1: open the gate and measurers (bad input fails
    here, nothing written), record them in ``measurers.json``, and list the images still to measure.

    The measure stage split for an executor whose workers are other processes or machines sharing
    the run directory: the driver takes the run lock (``RunLock(run_dir, "measure")``) and calls

    1. ``plan = plan_measure(run_dir, ..., worker_device="cuda")`` with the options
       ``measure_stage`` takes; ``device`` is where the driver opens the gate, ``worker_device``
       (default: the same) where the workers measure: it decides the CLIP precision and so the
       measurer fingerprint, so a CPU-only driver can plan for GPU workers;
    2. on each worker, ``measure_keys(plan, shard, worker=NAME)`` for a shard of ``plan.keys``
       (any partition; each worker a distinct ``NAME``): it measures what is still unmeasured,
       writes only ``measurements.parts/NAME-<seq>.parquet`` and ``embeddings.parts/NAME-<seq>.parquet``
       every ``CHECKPOINT_EVERY`` images, takes no lock and compacts nothing. A retried shard, or a
       worker killed and restarted under the same or another name, skips the images whose parts
       are written: parts are atomic, and every reader sees them;
    3. ``finish_measure(plan, results)`` once all workers returned: compacts the parts into
       ``measurements.parquet`` / ``embeddings.parquet`` in ``plan.keys`` order (so the tables do
       not depend on the sharding), writes ``measure.json`` last and raises the workers' unreadable
       images as one error line.

    ``measure_stage`` is these three steps in one process, with the one worker ``"local"``.
    """
    from t2ibias.core.device import resolve_device

    run = RunDir(Path(run_dir))
    dev = resolve_device(device)
    if worker_device is None:
        worker_device = dev
    elif not re.fullmatch(r"cpu|mps|cuda(:[0-9]+)?", worker_device):
        raise UserError(f"worker device {worker_device!r}: unknown (use cpu, cuda, cuda:N or mps)")
    job = _open_job(run, dev, batch_size, classifier, person_detector, person_conf, list(extra_measurers),
                    clip_precision(worker_device), face_detector=face_detector)
    todo = job.plan()
    record_measurers(run.path, job.info)
    return MeasurePlan(str(run.path), worker_device, batch_size, classifier, job.person_detector, job.person_conf,
                       tuple(extra_measurers), job.measurer, tuple(todo), job.result["cached"], job.config(),
                       job.face_detector)


def measure_keys(plan: MeasurePlan, keys: Sequence[str], worker: str, *, workers: int = 1,
                 progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Worker side of a distributed measure (see :func:`plan_measure`): measure the images ``keys``
    (of ``plan.keys``) not measured yet, as worker ``worker``, on ``plan.device``; ``workers``
    threads decode and gate ahead. Writes only this worker's part files, whatever happens (an
    exception still writes the rows made so far). Returns the counts (``measured``, ``faces``,
    ``people``, ``nobody``), ``errors`` (one line per unreadable image) and ``parts`` (the part
    file names written).
    """
    run = RunDir(Path(plan.run_dir))
    writer = PartWriter(run.path, worker)
    job = _open_job(run, plan.device, plan.batch_size, plan.classifier, plan.person_detector, plan.person_conf,
                    list(plan.extra_measurers), face_detector=plan.face_detector)
    job.record = False  # measurers.json is the driver's
    if job.measurer != plan.measurer:
        raise RuntimeError(f"worker {worker}: measurer {job.measurer} is not the plan's {plan.measurer} "
                           "(another gate, classifier, weights or precision than the driver's)")
    wanted = set(keys)
    todo = [k for k in job.plan() if k in wanted]
    if todo:
        job.start_classifier(plan.device, todo)
        job.run_batches([todo[i : i + plan.batch_size] for i in range(0, len(todo), plan.batch_size)], workers,
                        progress or (lambda n: None), writer)
    counts = {k: v for k, v in job.result.items() if k != "cached"}
    return {**counts, "errors": [str(e) for e in job.errors], "parts": list(writer.written)}


def finish_measure(plan: MeasurePlan, results: Sequence[dict[str, Any]] = ()) -> dict[str, int]:
    """Driver side, last step (see :func:`plan_measure`): compact every part file into the two
    tables, write ``measure.json``, then raise the workers' unreadable images (``results`` are
    what :func:`measure_keys` returned). Returns the summed counts, as ``measure_stage`` does."""
    run = RunDir(Path(plan.run_dir))
    compact_tables(run.path, [j.key for j in run.jobs])
    if read_json(run.path, MEASURE_FILE) != plan.config:
        atomic_write_text(run.path / MEASURE_FILE, json.dumps(plan.config, indent=1, sort_keys=True) + "\n")
    total = {"measured": 0, "cached": plan.cached, "faces": 0, "people": 0, "nobody": 0}
    for r in results:
        for k in ("measured", "faces", "people", "nobody"):
            total[k] += int(r.get(k, 0))
    _raise_errors([e for r in results for e in r.get("errors", [])])
    return total


class _MeasureJob:
    """One pass of the measure stage over a run: which images still need which measurer, the
    batched steps that measure them (``prepare`` gates and preprocesses a batch in a worker thread,
    ``consume`` classifies it in the caller's), and the rows made so far, written every
    ``CHECKPOINT_EVERY`` images so a crash loses little."""

    def __init__(self, run: RunDir, gate: PersonFaceGate, cspec: ClassifierSpec, extras: list[Measurer],
                 batch_size: int, precision: str = "float32") -> None:
        self.run_dir, self.gate, self.cspec, self.extras, self.batch_size = run.path, gate, cspec, extras, batch_size
        self.precision = precision
        self.jobs = run.jobs
        self.gate_fp = gate.fingerprint()
        self.measurer = measurer_fingerprint(self.gate_fp, cspec, precision)
        self.extra_fps = [crop_measurer_fingerprint(self.gate_fp, m) for m in extras]
        if len(set(self.extra_fps)) != len(self.extra_fps):
            raise UserError("extra measurers: the same measurer is given twice (give each once)")
        self.info = {
            self.measurer: {"id": cspec.id, "kind": "clip", "classifier_fingerprint": cspec.fingerprint(),
                            "units": list(UNITS), "gate": gate.config(), "gate_fingerprint": self.gate_fp,
                            **({"precision": precision} if precision != "float32" else {})},
            **{fp: {"id": m.id, "kind": "crop", "measurer_fingerprint": m.fingerprint(), "units": ["face"],
                    "gate": gate.config(), "gate_fingerprint": self.gate_fp} for m, fp in zip(extras, self.extra_fps)},
        }
        self.new_rows: list[dict[str, Any]] = []
        self.new_emb: list[dict[str, Any]] = []
        self.errors: list[UserError] = []
        self.since_checkpoint = 0
        self.clf: CLIPAttributeClassifier | None = None
        self.loaded: Any = None
        self.writer: PartWriter | None = None
        self.record = True  # record measurers.json before the first rows (a worker leaves it to its driver)
        self.person_detector, self.person_conf = "none", 0.25

    def plan(self) -> list[str]:
        """Read what is stored already; the keys of the intact images some measurer still needs."""
        self.store = ImageStore(self.run_dir)
        self.records = self.store.records()
        ok_keys = [j.key for j in self.jobs if self.records.get(j.key, {}).get("status") == OK]
        existing = read_measurements(self.run_dir)
        existing_emb = read_measurements(self.run_dir, EMBEDDINGS_FILE)
        mine = existing[existing["measurer"] == self.measurer]
        self.clip_done = set(mine["key"]) & set(existing_emb.loc[existing_emb["measurer"] == self.measurer, "key"])
        self.with_faces = set(mine.loc[mine["unit"] == "face", "key"])
        self.extra_done = [set(existing.loc[existing["measurer"] == fp, "key"]) for fp in self.extra_fps]
        todo = [k for k in ok_keys if any(x for x in self.needs(k))]
        self.result = {"measured": 0, "cached": len(ok_keys) - len(todo), "faces": 0, "people": 0, "nobody": 0}
        return todo

    def needs(self, key: str) -> tuple[bool, tuple[int, ...]]:
        """Whether the CLIP measurer still needs ``key``, and the indices of the crop measurers that do."""
        clip = key not in self.clip_done
        # an image the gate found no face in has nothing for a crop measurer to do
        todo_extra = tuple(i for i, done in enumerate(self.extra_done) if key not in done and (clip or key in self.with_faces))
        return clip, todo_extra

    def start_classifier(self, device: str, todo: list[str]) -> None:
        """The classifier loads in its own thread while the first batches are decoded and gated."""
        self.clf = CLIPAttributeClassifier(self.cspec, device, precision=self.precision)
        loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="t2ibias-load")
        self.loaded = loader.submit(self.clf.load) if any(self.needs(k)[0] for k in todo) else None
        loader.shutdown(wait=False)

    def prepare(self, keys: list[str]) -> tuple[list[_Prepared], Any]:
        """Decode, gate and crop the images of ``keys``; CLIP-preprocess the units that need it."""
        gate, out, images = self.gate, [], []
        for key in keys:
            clip, todo_extra = self.needs(key)
            item = _Prepared(key, clip=clip, extras=todo_extra)
            try:
                images.append(_open_image(self.store.image_file(self.records[key]), self.run_dir))
            except UserError as exc:
                item.error = exc
            out.append(item)
        good = [p for p in out if p.error is None]
        for item, image, (people, faces) in zip(good, images, gate.detect_many(images)):
            item.units.append(_Unit("image", -1, None, image))
            people_crops = [(b, gate.person.crop(image, b)) for b in people] if gate.person is not None else []
            for i, (box, crop) in enumerate([pc for pc in people_crops if _nonempty(pc[1])]):
                item.units.append(_Unit("person", i, box, crop))
            item.n_people = sum(u.unit == "person" for u in item.units)
            face_crops = [(b, gate.face.crop(image, b)) for b in faces]
            for i, (box, crop) in enumerate([fc for fc in face_crops if _nonempty(fc[1])]):  # zero-size crops skipped
                item.units.append(_Unit("face", i, box, crop))
        clip_units = [u.crop for p in good if p.clip for u in p.units]
        pixels = None
        if clip_units and self.loaded is not None:
            self.loaded.result()  # the pinned preprocessing comes with the model
            pixels = self.clf.preprocess_images(clip_units)
        return out, pixels

    def consume(self, prepared: list[_Prepared], pixels: Any) -> None:
        """Classify one prepared batch with CLIP and the crop measurers; keep its rows."""
        good = [p for p in prepared if p.error is None]
        self.errors.extend(p.error for p in prepared if p.error is not None)
        clip_items = [(p, u) for p in good if p.clip for u in p.units]
        if clip_items and self.loaded is not None:
            self.loaded.result()
        preds: list[dict[str, Prediction]] = []
        for start in range(0, len(clip_items), self.batch_size):
            feats = self.clf.encode_pixels(pixels[start : start + self.batch_size])
            vectors = feats.cpu().numpy().astype("float32")
            preds += self.clf.predict(feats)
            for (p, u), vec in zip(clip_items[start : start + self.batch_size], vectors):
                if u.unit == "image":
                    self.new_emb.append({"key": p.key, "measurer": self.measurer, "embedding": vec})
        for (p, u), pr in zip(clip_items, preds):
            self.new_rows.extend(_rows(p.key, self.measurer, u.unit, u.index, u.box, pr))
        for i, (m, fp) in enumerate(zip(self.extras, self.extra_fps)):
            crops = [(p, u) for p in good if i in p.extras for u in p.faces]
            if not crops:
                continue
            answers = m.measure([u.crop for _, u in crops])
            if len(answers) != len(crops):
                raise RuntimeError(f"measurer {m.id!r} returned {len(answers)} answers for {len(crops)} crops")
            for (p, u), pr in zip(crops, answers):
                self.new_rows.extend(_rows(p.key, fp, "face", u.index, u.box, pr))
        for p in good:
            self.result["faces"] += len(p.faces)
            self.result["people"] += p.n_people
            self.result["nobody"] += (p.n_people == 0) if self.gate.person is not None else not p.faces
        self.result["measured"] += len(good)
        self.since_checkpoint += len(prepared)
        if self.since_checkpoint >= CHECKPOINT_EVERY:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Append the rows made since the last checkpoint as part files (measurers.json first)."""
        if not self.new_rows and not self.new_emb:
            return
        if self.record:
            record_measurers(self.run_dir, self.info)  # before the rows it describes
        self.writer.write(pd.DataFrame(self.new_rows, columns=COLUMNS), pd.DataFrame(self.new_emb, columns=EMBEDDING_COLUMNS))
        self.new_rows, self.new_emb, self.since_checkpoint = [], [], 0

    def run_batches(self, batches: list[list[str]], workers: int, advance: Callable[[int], None], writer: PartWriter) -> None:
        """``prepare`` up to ``workers + 1`` batches ahead in worker threads (the one read-ahead
        pool, :func:`t2ibias.core.prefetch.prefetch_map`), ``consume`` them in order; whatever
        happens, the rows made so far are written (by ``writer``)."""
        self.writer = writer
        prepared_batches = prefetch_map(self.prepare, batches, workers, ahead=workers + 1, thread_name="t2ibias-measure")
        try:
            with closing(prepared_batches):
                for prepared, pixels in prepared_batches:
                    self.consume(prepared, pixels)
                    advance(len(prepared))
        except BaseException:
            if self.loaded is not None and not self.loaded.done():
                self.loaded.cancel()
            self.checkpoint()  # nothing measured so far is lost
            raise
        self.checkpoint()

    def config(self) -> dict[str, Any]:
        """What ``measure.json`` records."""
        return {
            "t2ibias_version": __version__, "gate": self.gate.config(), "gate_fingerprint": self.gate_fp,
            "measurer": self.measurer, "classifier": {"id": self.cspec.id, "fingerprint": self.cspec.fingerprint()},
            "extra_measurers": {m.id: fp for m, fp in zip(self.extras, self.extra_fps)},
        }

    def record_config(self) -> None:
        """measurers.json (who wrote the rows), then measure.json (the gate score reads): last, atomically."""
        record_measurers(self.run_dir, self.info)
        config = self.config()
        if read_json(self.run_dir, MEASURE_FILE) != config:
            atomic_write_text(self.run_dir / MEASURE_FILE, json.dumps(config, indent=1, sort_keys=True) + "\n")
