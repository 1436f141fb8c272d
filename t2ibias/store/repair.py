"""``t2ibias validate RUN --deep``: re-hash every stored image and drop the manifest lines of
those whose bytes no longer match, so that the next ``generate`` makes them again.

The default resume check (:meth:`~t2ibias.store.image_store.ImageStore.done_keys`) trusts a file
of the recorded size; this is the check that reads every byte. It rewrites the manifest only
(under the run's lock) and deletes no file: a bad image is replaced when ``generate`` writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from t2ibias.store.image_store import OK
from t2ibias.store.rundir import RunDir


@dataclass
class Repair:
    """What a deep check found and did: one line per problem, and the counts of the summary."""

    checked: int = 0
    total: int = 0
    problems: list[str] = field(default_factory=list)
    dropped: int = 0

    def summary(self, run_dir: Path) -> str:
        if not self.problems:
            return f"ok  deep check: {self.checked} of {self.total} images re-hashed, all match the manifest"
        return (f"deep check: {self.checked} of {self.total} images re-hashed, {len(self.problems)} did not match; "
                f"dropped {self.dropped} manifest lines (run `t2ibias generate {run_dir}` to remake them)")


def deep_check(run_dir: Path) -> Repair:
    """Re-hash every finished image of the run's jobs; drop the lines of those that do not match."""
    run = RunDir(run_dir)
    jobs = run.jobs
    store = run.store
    records = store.records()
    result = Repair(total=len(jobs))
    bad = []
    for job in jobs:
        row = records.get(job.key)
        if row is None or row.get("status") != OK:
            continue
        result.checked += 1
        problem = store.problem(row, deep=True)
        if problem is not None:
            bad.append(job.key)
            result.problems.append(f"{run_dir / str(row.get('path'))}: {problem}: manifest line dropped "
                                   f"(prompt {job.prompt_id}, image {job.index})")
    result.dropped = store.drop(bad)
    return result
