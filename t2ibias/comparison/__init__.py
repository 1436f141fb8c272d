"""``t2ibias compare``: runs of different models (or settings) on the same prompts, side by side.

- :mod:`t2ibias.comparison.match`: read each run's outputs, check that one instrument measured them,
  and match their images on prompt text and seed index (only shared prompts enter).
- :mod:`t2ibias.comparison.paired`: each model's headline figures over the matched prompts, paired
  per-prompt differences between models with intervals and Benjamini–Hochberg q-values, and a
  ranking per prompt family and intervention with bootstrap rank intervals.
- :mod:`t2ibias.comparison.leaderboard`: the versioned ``leaderboard.json`` and its validation.
- :mod:`t2ibias.comparison.html`: the compare page and the leaderboard page (inline SVG charts).
"""
