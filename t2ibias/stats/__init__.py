"""The one engine for intervals and tests used by the score stage, the audit and facet_eval.

- :mod:`t2ibias.stats.binomial`: shares (Clopper–Pearson, Wilson, Jeffreys; Korn–Graubard over prompts).
- :mod:`t2ibias.stats.projection`: skew statistics, valid at and near balance.
- :mod:`t2ibias.stats.testing`: tests of fit (exact by Monte Carlo), Benjamini–Hochberg q-values, t intervals.
- :mod:`t2ibias.stats.bootstrap`: vectorized percentile / BCa / cluster bootstrap of counts.
- :mod:`t2ibias.stats.cluster`: group means of per-unit values resampled by cluster (images, or
  prompts then images), joint over groups for gaps.
- :mod:`t2ibias.stats.rng`: one seeded generator per (seed, names) for every resampling.
"""
