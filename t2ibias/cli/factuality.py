"""``t2ibias factuality``: DoFaiR factuality of generated images from their detected faces.

Reads a DoFaiR release CSV (the instances and their gold facts) and a faces file (FairFace
``predict.py`` output, or a table ``image, race/gender``; see
:func:`t2ibias.metrics.factuality.load_faces`), prints DDA, IDA, IDF, FDD and the success rate
overall and per culture with 95% bootstrap intervals, and optionally writes them as JSON. With
``--tax`` it adds the factuality tax of interventions
(:func:`t2ibias.metrics.factuality.factuality_tax_table`), from one faces file per intervention.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from t2ibias.core.errors import UserError, check_output_file, writing
from t2ibias.core.files import atomic_write_text, dumps_strict
from t2ibias.core.fmt import fmt_estimate
from t2ibias.metrics.factuality import TAX_METRICS, factuality_tax_table, load_faces, per_instance_scores, summarize_table
from t2ibias.prompts.dofair import load_dofair_instances


class Axis(str, Enum):
    race = "race"
    gender = "gender"


_SHORT = {
    "dominant_demographic_accuracy": "DDA",
    "involved_demographic_accuracy": "IDA",
    "involved_demographic_f1": "IDF",
    "factual_diversity_divergence": "FDD",
    "success_rate": "success",
    "diversity": "diversity",
}


def _cell(value: float | None, ci: list | None = None) -> str:
    """``0.812 [0.790, 0.833]``; the value alone without a whole interval, ``—`` without a value."""
    return fmt_estimate(value, *(ci or (None, None)), digits=3, small=False)


def _input_file(path: Path, field: str) -> Path:
    """Refuse a folder or a missing path given where a CSV is expected, naming the option."""
    if path.is_dir():
        raise UserError(f"{field} {path}: is a folder, not a CSV file (pass the file itself)")
    if not path.is_file():
        raise UserError(f"{field} {path}: no such file (check the path)")
    return path


def _load_faces(path: Path, field: str = "--faces") -> pd.DataFrame:
    """:func:`load_faces` with a folder or a missing file refused naming the option."""
    return load_faces(_input_file(path, field))


def _read_instances(path: Path, axis: str | None) -> tuple[pd.DataFrame, str]:
    instances = load_dofair_instances(_input_file(path, "--instances"))
    if instances.empty:
        raise UserError(f"{path}:2: no instances (the file has a header but no rows)")
    file_axis = str(instances["axis"].iloc[0])
    if axis is not None and axis != file_axis:
        raise UserError(f"{path}: a DoFaiR {file_axis} file, but --axis {axis} (pass the {axis} file or --axis {file_axis})")
    instances.attrs["source"] = str(path)
    return instances, file_axis


def results_table(result: dict[str, Any], title: str) -> Table:
    """A rich table of a :func:`score_factuality` result: overall, then one row per culture."""
    metrics = ("dominant_demographic_accuracy", "involved_demographic_accuracy", "involved_demographic_f1",
               "factual_diversity_divergence", "success_rate")
    table = Table(title=escape(title), caption=escape("values [95% bootstrap CI over instances]; n = instances, scored = with ≥ 1 face"))
    table.add_column("culture", overflow="fold")
    table.add_column("n", justify="right")
    table.add_column("scored", justify="right")
    for m in metrics:
        table.add_column(_SHORT[m], justify="right")
    rows = [("all", result, "bold"), *((c, r, None) for c, r in result["by_culture"].items())]
    for name, r, style in rows:
        table.add_row(escape(str(name)), str(r["n_instances"]), str(r["n_scored"]), *(_cell(r[m], r[f"{m}_ci"]) for m in metrics), style=style)
    return table


def factuality(
    instances: Annotated[Path, typer.Option("--instances", metavar="CSV", help="A DoFaiR release CSV (dofair_race.csv or dofair_gender.csv).")],
    faces: Annotated[Path, typer.Option("--faces", metavar="CSV", help="Faces found in the images: FairFace predict.py output (face_name_align, race, gender) or a table with image and race and/or gender; matched to instances by image file stem.")],
    axis: Annotated[Axis | None, typer.Option("--axis", metavar="race|gender", help="Which facts to score [default: the axis of the --instances file].")] = None,
    dofair_compat: Annotated[bool, typer.Option("--dofair-compat", help="Score DDA as the released DoFaiR script does (TN/FN carried over from the IDA step; ties by first face).")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", metavar="OUT", help="Also write the metrics, by culture and with CIs, to this JSON file.")] = None,
    tax: Annotated[list[str] | None, typer.Option("--tax", metavar="NAME=CSV", help="Faces of the same instances generated under an intervention (repeat for several): adds the factuality tax of each against --faces as the baseline, with paired CIs.")] = None,
) -> None:
    """DoFaiR factuality (DDA, IDA, IDF, FDD, success rate) of generated images, overall and by culture."""
    if json_out is not None:
        check_output_file(json_out, "--json")
    tax_files: dict[str, Path] = {}
    for item in tax or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path or name == "none":
            raise UserError(f"--tax {item}: expected NAME=FACES.csv with a name other than 'none' (e.g. --tax diversity_diverse=faces_div.csv)")
        tax_files[name] = _input_file(Path(path), f"--tax {name}")
    inst, axis_name = _read_instances(instances, axis.value if axis is not None else None)
    face_df = _load_faces(faces)
    tax_faces = {name: _load_faces(path, f"--tax {name}") for name, path in tax_files.items()}
    table = per_instance_scores(inst, face_df, axis_name, dofair_compat)
    result = summarize_table(table)
    console = Console(width=None if sys.stdout.isatty() else 140)
    title = f"DoFaiR factuality · {axis_name} · {instances.name}" + (" · released-scorer DDA (--dofair-compat)" if dofair_compat else "")
    console.print(results_table(result, title))
    ties = ("DDA ties by first face, as the released script" if dofair_compat
            else "DDA ties at the k-th place share the places left (expected credit)")
    console.print(f"intervals: DDA, IDA, IDF, FDD percentile over resampled instances; success rate Clopper-Pearson. {ties}.",
                  highlight=False, markup=False)
    if tax_faces:
        interventions: dict[str, Any] = {"none": face_df, **tax_faces}
        tax_df = factuality_tax_table(inst, interventions, axis_name, dofair_compat)
        console.print(tax_rich_table(tax_df))
        result["factuality_tax"] = json.loads(tax_df.to_json(orient="records"))
    if json_out is not None:
        with writing("--json"):
            atomic_write_text(json_out, dumps_strict(result, indent=2, ensure_ascii=False) + "\n")
        console.print(f"wrote {json_out}", highlight=False, markup=False)


def tax_rich_table(tax: pd.DataFrame, title: str = "factuality tax (intervention − none)") -> Table:
    """A rich table of :func:`factuality_tax_table` output."""
    table = Table(title=escape(title), caption=escape("Δ [95% paired bootstrap CI]; negative DDA/IDA/IDF = factuality lost, positive diversity = gained"))
    table.add_column("intervention")
    table.add_column("pairs", justify="right")
    for m in TAX_METRICS:
        table.add_column(f"Δ {_SHORT[m]}", justify="right")
    for row in tax.to_dict("records"):
        table.add_row(escape(str(row["intervention"])), str(row["n_paired"]), *(
            _cell(row[f"delta_{m}"], [row[f"delta_{m}_ci_low"], row[f"delta_{m}_ci_high"]]) for m in TAX_METRICS
        ))
    return table
