"""The spec of a run: what a user asked ``t2ibias sweep`` (or :func:`t2ibias.sweep`) for, resolved
into the run directory's ``spec.json`` and prompt records.

The stages themselves live in their folders (``generation/stage.py``, ``measure/stage.py``,
``metrics/score.py``, ``report/``); the CLI and the Python API compose them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from t2ibias.core.version import __version__
from t2ibias.core.device import resolve_device
from t2ibias.core.errors import UserError
from t2ibias.core.files import atomic_write_text
from t2ibias.core.fingerprint import fingerprint
from t2ibias.core.hub import quiet_hub
from t2ibias.generation.diffusers_adapter import ResolvedWeights, effective_dtype, generator_fingerprint, resolve_weights
from t2ibias.generation.replay import ReplayPlan
from t2ibias.models.generator_spec import GeneratorSpec, resolve_generator_spec
from t2ibias.prompts.augment import fact_augment
from t2ibias.prompts.bank import expand, resolve_prompt_set
from t2ibias.prompts.types import PromptRecord
from t2ibias.store.lock import LOCK_FILE, RunLock
from t2ibias.store.rundir import (AUDIT_FILE, PROMPTS_FILE, SPEC_FILE, TOKENS_FILE, check_clearable, clear_run, now_iso, read_spec,
                                  write_parquet)

DEFAULT_BASE_SEED = 0
#: Images one run may hold: ten times the largest sweep the suite is built for, and small enough
#: that the list of image jobs fits in memory.
MAX_IMAGES = 2_000_000


@dataclass
class SweepRequest:
    """What a user asked ``t2ibias sweep`` for."""

    model: str
    prompt_sets: list[str]
    n_seeds: int = 4
    base_seed: int = DEFAULT_BASE_SEED
    classifier: str = "tiny-random-clip"
    device: str = "auto"
    limit: int | None = None
    #: Run the heavy modules image by image so --batch-size never changes pixels (see samplewise.py).
    batch_invariant: bool = True
    #: Text generator for fact-augmented prompts (fai_vk, and fai_rk with ``docs``): URL or folder.
    llm: str | None = None
    llm_model: str | None = None
    docs: str | None = None
    #: A generator handed in from Python (a loaded pipeline, an image-making callable): its spec
    #: and weight identity, recorded as given instead of resolving ``model``.
    model_spec: GeneratorSpec | None = None
    model_weights: ResolvedWeights | None = None
    #: A ``replay:DIR`` run: its index read and its files checked (prompts, images, problems).
    replay: ReplayPlan | None = None


def build_spec(req: SweepRequest) -> tuple[dict[str, Any], list[PromptRecord], str]:
    """Resolve ids (model weights included) into the run spec and the prompt records."""
    from t2ibias.models.classifier_spec import resolve_classifier_spec

    if req.n_seeds < 1:
        raise UserError(f"--seeds {req.n_seeds}: need at least one image per prompt")
    if req.n_seeds > MAX_IMAGES:
        raise UserError(f"--seeds {req.n_seeds}: more images than one run holds (at most {MAX_IMAGES:,}; use fewer seeds)")
    if req.limit is not None and req.limit < 1:
        raise UserError(f"--limit {req.limit}: must be a positive number of prompts")
    gspec = req.model_spec or resolve_generator_spec(req.model)
    if req.replay is not None:  # prompts and image counts come from the index
        records = req.replay.records
        n_seeds = req.replay.max_images
    else:
        sets = [resolve_prompt_set(name) for name in req.prompt_sets]
        if len({s.id for s in sets}) != len(sets):
            raise UserError("--prompts: the same set is named twice (name each set once)")
        sets = fact_augment(sets, req.llm, req.llm_model, req.docs)
        records = [r for s in sets for r in expand(s)]
        n_seeds = req.n_seeds
    n_images = req.n_seeds * min(len(records), req.limit or len(records)) if req.replay is None else req.replay.n_images
    if n_images > MAX_IMAGES:
        raise UserError(
            f"--seeds {req.n_seeds}: {n_images:,} images over {len(records):,} prompts, more than one run holds "
            f"(at most {MAX_IMAGES:,}; use fewer seeds, or split the prompts over runs with --prompts or --limit)"
        )
    cspec = resolve_classifier_spec(req.classifier)
    device = resolve_device(req.device)
    dtype = gspec.dtype if req.model_weights else effective_dtype(gspec, device)
    from t2ibias.models.clip_zeroshot import ensure_classifier_weights

    with quiet_hub():  # missing weights: one error line, not a minute of retries and warnings
        weights = req.model_weights or resolve_weights(gspec)
        ensure_classifier_weights(cspec)
    gfp = generator_fingerprint(gspec, weights, dtype, req.batch_invariant)
    defining = {
        "generator_fingerprint": gfp,
        "prompts": fingerprint([r.to_dict() for r in records]),
        "n_seeds": n_seeds,
        "base_seed": req.base_seed,
        "classifier_fingerprint": cspec.fingerprint(),
    }
    spec = {
        "fingerprint": fingerprint(defining),
        "t2ibias_version": __version__,
        "created": now_iso(),
        "model": {**gspec.to_dict(), "dtype": dtype, "revision": weights.revision or gspec.revision},
        "weights": weights.identity,
        "generator_fingerprint": gfp,
        "model_is_random": gspec.random_weights,
        "prompt_sets": req.replay.prompt_sets if req.replay is not None else
        [{"id": s.id, "version": s.version, "sha256": s.sha256, "path": str(s.path)} for s in sets],
        "n_prompts": len(records),
        "n_seeds": n_seeds,
        "base_seed": req.base_seed,
        "classifier": {**cspec.summary(), "fingerprint": cspec.fingerprint()},
        # the whole spec, so later stages never look the classifier up again (as "model" holds the generator's)
        "classifier_spec": cspec.to_dict(),
        "device": device,
        "batch_invariant": req.batch_invariant,
        "limit": req.limit,
        "defining": defining,
    }
    if req.replay is not None:
        spec["replay"] = req.replay.spec_entry()
    return spec, records, weights.folder


def prepare_run(run_dir: Path, req: SweepRequest, force: bool = False) -> dict[str, Any]:
    """Write (or check) ``spec.json`` and ``prompts.parquet``; refuse a directory of another spec.

    With ``force``, a directory holding another t2ibias run is cleared of that run's own files
    (:func:`clear_run`) first; anything else in it is kept. Everything is checked before anything
    is deleted or written, under the run's lock.

    An audit the classifier config names (``audit:``) is copied in as ``audit.json`` when the run
    holds none yet; one already there (from an earlier sweep or ``t2ibias score --audit``) is kept.
    """
    run_dir = Path(run_dir)
    with RunLock(run_dir, "sweep", create=True):
        spec, records, weights_folder = build_spec(req)
        spec_path = run_dir / SPEC_FILE
        clear = False
        if spec_path.exists():
            old = read_spec(run_dir)
            if old.get("fingerprint") != spec["fingerprint"]:
                if not force:
                    changed = [k for k in spec["defining"] if old.get("defining", {}).get(k) != spec["defining"][k]]
                    raise UserError(
                        f"--out {run_dir}: holds a run of another spec (differs in {', '.join(changed) or 'fingerprint'}); "
                        "choose another --out, or pass --force to delete it and start over"
                    )
                check_clearable(run_dir, old)
                clear = True
            else:
                spec["created"] = old.get("created", spec["created"])
        elif any(p.name != LOCK_FILE for p in run_dir.iterdir()):
            extra = " (--force deletes only the files of a t2ibias run, and there is no spec.json here)" if force else ""
            raise UserError(f"--out {run_dir}: exists and is not a t2ibias run (choose an empty or new directory){extra}")
        audit = None
        config = spec["classifier_spec"]
        if config.get("audit") and (clear or not (run_dir / AUDIT_FILE).exists()):
            from t2ibias.metrics.instrument import audit_to_attach

            audit = audit_to_attach(config["audit"], "classifier config", config=str(config.get("path")))
        prompts = pd.DataFrame([r.to_dict() for r in records])
        if req.replay is not None:
            prompts = req.replay.prompt_frame(prompts)
        tokens = None
        if weights_folder:
            from t2ibias.prompts.tokens import count_prompt_tokens, truncation_summary

            tokens = count_prompt_tokens(weights_folder, prompts, spec["model"].get("call_kwargs", {}).get("max_sequence_length"))
            spec["prompt_truncation"] = truncation_summary(tokens)
        if clear:
            clear_run(run_dir)
        atomic_write_text(spec_path, json.dumps(spec, indent=2) + "\n")
        write_parquet(run_dir / PROMPTS_FILE, prompts)
        if tokens is not None:
            write_parquet(run_dir / TOKENS_FILE, tokens)
        if req.replay is not None:
            req.replay.write(run_dir)
        if audit is not None:
            from t2ibias.metrics.instrument import write_audit

            write_audit(run_dir / AUDIT_FILE, audit)
    return spec
