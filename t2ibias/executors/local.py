"""The default executor: the images are made in this process, exactly as without an executor."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from t2ibias.generation.stage import JobTally, generate_jobs, load_generator
from t2ibias.store.image_store import ImageStore
from t2ibias.store.rundir import ImageJob


class LocalExecutor:
    """One process, one pipeline, the manifest shard ``manifest-0.jsonl``."""

    name = "local"

    def generate(self, run_dir: Path, spec: dict[str, Any], jobs: list[ImageJob], device: str, batch_size: int,
                 advance: Callable[[int], None]) -> JobTally:
        generator = load_generator(run_dir, spec, device)
        store = ImageStore(run_dir)
        try:
            return generate_jobs(store, spec, jobs, generator, batch_size, advance)
        finally:
            store.close()

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
