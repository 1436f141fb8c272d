"""The one engine for intervals and tests used by the score stage, the audit and facet_eval.

- :mod:`t2ibias.stats.binomial`: shares (Clopper–Pearson, Wilson, Jeffreys; Korn–Graubard over prompts).
- :mod:`t2ibias.stats.projection`: skew statistics, valid at and near balance.
- :mod:`t2ibias.stats.testing`: tests of fit (exact by Monte Carlo), Benjamini–Hochberg q-values, t intervals.
- :mod:`t2ibias.stats.bootstrap`: vectorized percentile / BCa / cluster bootstrap of counts.
"""
