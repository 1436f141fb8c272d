"""``python -m t2ibias.cli``: the ``t2ibias`` command."""

from t2ibias.cli import main

main()
