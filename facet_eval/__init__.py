"""facet_eval: evaluation of vision models on the FACET benchmark across perceived groups."""

__version__ = "0.1.0"
