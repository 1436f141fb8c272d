"""``t2ibias compare``: runs of different models on the same prompts, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def compare(
    runs: Annotated[list[Path], typer.Argument(help="Two or more scored run directories (made by `t2ibias sweep`).")],
    out: Annotated[Path, typer.Option("--out", metavar="FILE.html", help="The compare page; leaderboard.json and leaderboard.html are written beside it.")],
    json_out: Annotated[Optional[Path], typer.Option("--json", metavar="FILE.json", help="Also write every per-model, paired and rank row as JSON.")] = None,
    allow_different_measurers: Annotated[bool, typer.Option("--allow-different-measurers", help="Compare runs measured with different classifiers or gates; every figure then says so.")] = False,
    confidence: Annotated[float, typer.Option("--confidence", metavar="C", help="Confidence level of every interval, strictly between 0 and 1.")] = 0.95,
) -> None:
    """Compare runs matched on prompt text and seed index: per-model figures, paired differences with
    intervals and q-values, ranks with intervals, and a leaderboard."""
    from t2ibias.cli import out as console
    from t2ibias import api

    summary: list[str] = []
    written = api.compare(list(runs), out, json=json_out, confidence=confidence,
                          allow_different_measurers=allow_different_measurers, summary=summary)
    for line in summary:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    for name, path in written.items():
        console.print(f"{name.replace('_', ' ')}: {path}", markup=False, highlight=False)



def validate_json(path: Path, out, err) -> None:
    """`t2ibias validate FILE.json`: a leaderboard written by `t2ibias compare`. Prints one ``ok``
    line, or every problem (the first as the ``error:`` line) and exits 2."""
    from t2ibias.comparison.leaderboard import load_leaderboard, looks_like_leaderboard, validate_document
    from t2ibias.core.errors import EXIT_USER_ERROR, report_problems

    doc, problems = load_leaderboard(path)
    if not problems and not looks_like_leaderboard(doc):
        schema = doc.get("schema") if isinstance(doc, dict) else None
        problems = [f"{path}: field schema: {schema!r} is not a file t2ibias validates (JSON files: a leaderboard.json "
                    "written by `t2ibias compare`; facet-eval submissions: `facet-eval validate`)"]
    problems = problems or validate_document(doc, str(path))
    if problems:
        report_problems(problems, lambda line: err.print(line, highlight=False, markup=False, soft_wrap=True))
        raise typer.Exit(EXIT_USER_ERROR)
    out.print(f"ok  {path}: leaderboard v{doc['schema_version']}: {len(doc['models'])} models, {len(doc['rows'])} rows",
              markup=False, highlight=False)
