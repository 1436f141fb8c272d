"""The ``facet-eval`` command line."""

from __future__ import annotations

import typer

from facet_eval import __version__

app = typer.Typer(help="Evaluate vision models on FACET, disaggregated by perceived attributes.", add_completion=False)


@app.callback(invoke_without_command=True)
def _main(version: bool = typer.Option(False, "--version", help="Print the version.")) -> None:
    if version:
        typer.echo(f"facet-eval {__version__}")


def main() -> None:
    app()
