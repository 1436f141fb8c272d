"""Perceived-attribute measurement: person/face gating and CLIP zero-shot attributes."""
