"""The content-addressed image store and its manifest."""

from t2ibias.store.image_store import ImageStore, atomic_write_bytes, atomic_write_text, image_key, image_seed

__all__ = ["ImageStore", "atomic_write_bytes", "atomic_write_text", "image_key", "image_seed"]
