"""The content-addressed image store and its manifest; the lock of a run directory."""

from t2ibias.store.image_store import ImageStore, image_key, image_seed
from t2ibias.store.lock import RunLock, RunLockedError, read_lock_holder

__all__ = ["ImageStore", "RunLock", "RunLockedError", "image_key",
           "image_seed", "read_lock_holder"]
