"""``t2ibias audit``: measure a perceived-attribute classifier's own per-group error on FACET."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from t2ibias.core.errors import UserError, check_output_dir, writing


def audit(
    classifier: Annotated[str, typer.Option("--classifier", metavar="ID", help="A classifier id or YAML file (`t2ibias ls classifiers`), pixel-mst, or fairface:PATH / fairface4:PATH.")],
    facet_root: Annotated[Path, typer.Option("--facet-root", metavar="DIR", help="FACET release root (annotations/ and imgs_*/).")],
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Where to write audit.json, audit.csv, confusion_*.csv, predictions.csv, audit.html.")],
    limit: Annotated[Optional[int], typer.Option("--limit", metavar="N", help="Audit a seeded random sample of N people (all eligible people by default).")] = None,
    device: Annotated[str, typer.Option("--device", metavar="auto|cpu|cuda", help="auto (a GPU when one is visible), cpu or cuda.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", metavar="N", help="Crops per classifier call.")] = 64,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the --limit sample and of the bootstrap.")] = 0,
    n_boot: Annotated[int, typer.Option("--n-boot", metavar="N", help="Bootstrap resamples for the intervals.")] = 1000,
    crops: Annotated[str, typer.Option("--crops", metavar="face|person", help="What the classifier sees: the largest face the run's face gate finds in each person's box (as `t2ibias measure` labels images; no face = abstention), or the whole padded person box.")] = "face",
    face_detector: Annotated[str, typer.Option("--face-detector", metavar="ID", help="The face gate (`t2ibias ls gates`) that --crops face uses and whose detection rate among FACET's visible faces is audited (gate_recall rows).")] = "haar",
    engine: Annotated[str, typer.Option("--engine", metavar="vectorized|fairlearn", help="How the image resamples behind the intervals are evaluated: as matrix products (fast), or by a fairlearn MetricFrame each (slow; the same numbers).")] = "vectorized",
) -> None:
    """Audit a classifier on FACET's human-labelled people: per-group accuracy, confusion matrices,
    calibration, with bootstrap intervals. The sweep report of a run measured with this classifier
    then shows the audit and confusion-corrected proportions beside the raw ones."""
    from t2ibias.audit import AuditOptions, run_audit
    from t2ibias.core.device import resolve_device
    from t2ibias.core.progress import done_of_total, progress_bar
    from t2ibias.measure.gate import create_face_detector
    from t2ibias.measure.measurers import resolve_measurer
    from t2ibias.report.audit_html import write_audit_html

    if crops not in ("face", "person"):
        raise UserError(f"--crops: {crops!r} (use face or person)")
    if n_boot < 0:
        raise UserError(f"--n-boot: {n_boot} (use 0 for no intervals, or e.g. 1000)")
    if seed < 0:
        raise UserError(f"--seed: {seed} is negative (use 0 or a positive integer)")
    check_output_dir(out, "--out")
    from t2ibias.core.errors import UnknownIdError

    try:  # the gate gives face crops (--crops face) and is audited itself (gate_recall) either way
        face_gate = create_face_detector(face_detector, resolve_device(device))
    except UnknownIdError as exc:
        raise UnknownIdError(f"--face-detector: {exc}") from None
    load = getattr(face_gate, "load", None)
    face_gate.fingerprint()  # a missing extra or a corrupt model file fails before anything is written
    if callable(load):
        load()
    predictor = resolve_measurer(classifier, resolve_device(device))
    fp = predictor.fingerprint()
    options = AuditOptions(limit=limit, batch_size=batch_size, seed=seed, n_boot=n_boot, engine=engine,
                           face_gate=face_gate if crops == "face" else None, recall_gate=face_gate)
    with writing("--out"):
        with progress_bar("audit") as bar:
            result = run_audit(predictor, facet_root, out, classifier_id=getattr(predictor, "id", classifier),
                               fingerprint=fp, options=options, progress=done_of_total(bar))
        write_audit_html(out)
    if crops == "face":
        facet = result["facet"]
        typer.echo(f"no face found for {facet['n_no_face']} of {facet['n_audited']} people (counted as abstentions)")
    from t2ibias.audit.gate_recall import gate_line

    typer.echo(gate_line(result.get("gate")))
    for attr, why in result.get("not_audited", {}).items():
        typer.echo(f"{attr}: not audited: {why}")
    for attr, entry in result["attributes"].items():
        acc = entry.get("accuracy") or {}
        value = acc.get("value")
        shown = "-" if value is None or value != value else f"{100 * value:.1f}%"
        typer.echo(f"{attr}: accuracy {shown} (n={acc.get('n')}), abstained {100 * (entry.get('abstain_rate') or {}).get('value', 0):.1f}%")
    typer.echo(f"wrote {out / 'audit.json'} and {out / 'audit.html'}; a run reports it once attached: "
               f"t2ibias score RUN --audit {out / 'audit.json'}")

