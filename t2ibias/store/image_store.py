"""A content-addressed image store that survives crashes and never duplicates work.

Layout under a run directory::

    images/<k0k1>/<key>.png      one PNG per image, key = hash(generator, prompt text, seed, params)
    manifest-<worker>.jsonl      one JSON line per finished image (any number of shards)

An image is written to a temporary file and renamed into place, then its manifest line (with the
image's sha256 and byte size) is appended and flushed. A run killed at any moment leaves at worst
an image file without its line (regenerated on resume, with identical bytes) or a truncated last
line (ignored). Nothing is fsynced per image, which would cost milliseconds per image.

On resume an image counts as done when its manifest line says so and its file is there with the
recorded size: one ``stat`` per image, not a re-read (at 90k SDXL images a re-hash reads ~135 GB
before the first new image). That catches what a crash or a lost page cache leaves behind — a
missing file, a file cut short or left empty — and a file replaced by one of another size; those
are made again. Lines written before sizes were recorded are checked by their hash instead. What
the size cannot see is a file changed in place with its length kept (a flipped bit on disk, an
edit): ``t2ibias validate RUN --deep`` re-hashes every image and drops the lines of those whose
bytes no longer match (:meth:`ImageStore.drop`), so the next ``generate`` makes them again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from t2ibias.core.errors import UserError
from t2ibias.core.fingerprint import canonical_json
from t2ibias.core.files import atomic_write_bytes, atomic_write_text

MANIFEST_GLOB = "manifest*.jsonl"
OK, BLOCKED, FAILED = "ok", "blocked", "failed"
_PLAIN_KEY = re.compile(r"[0-9A-Za-z_-]{2,128}")


def image_seed(base_seed: int, prompt_id: str, index: int) -> int:
    """The seed of image ``index`` of a prompt: independent of batch size, order and device count."""
    return image_seeds(base_seed, prompt_id, [index])[0]


def image_seeds(base_seed: int, prompt_id: str, indices: list[int]) -> list[int]:
    """:func:`image_seed` for many indices of one prompt."""
    base = hashlib.sha256(f"{base_seed}/{prompt_id}/".encode())
    seeds = []
    for index in indices:
        h = base.copy()
        h.update(str(index).encode())
        seeds.append(int.from_bytes(h.digest()[:8], "big") & (2**63 - 1))
    return seeds


def image_key(generator_fingerprint: str, prompt_text: str, seed: int, params: dict[str, Any]) -> str:
    """Content key of one image: changes whenever anything that shapes its pixels changes.

    The sha256 of ``canonical_json({"g": generator, "p": prompt text, "params": params, "s": seed})``.
    """
    return image_keys(generator_fingerprint, prompt_text, [seed], params)[0]


def image_keys(generator_fingerprint: str, prompt_text: str, seeds: list[int], params: dict[str, Any]) -> list[str]:
    """:func:`image_key` for many seeds of one prompt, serializing the shared part once."""
    head = canonical_json({"g": generator_fingerprint, "p": prompt_text, "params": params})[:-1] + ',"s":'
    base = hashlib.sha256(head.encode("utf-8"))
    keys = []
    for seed in seeds:
        h = base.copy()
        h.update(f"{seed}}}".encode())
        keys.append(h.hexdigest()[:32])
    return keys


def confined_path(root: str | Path, rel: Any, where: str = "path") -> Path:
    """``root / rel`` for a relative path read from a run file, or :class:`UserError` when it is
    not one: not text, absolute, with ``..``, or leading outside ``root`` through a symlink.

    Run files (manifests above all) can be edited or come from elsewhere; nothing the project
    reads through them may lie outside the run directory.
    """
    fix = f"an edited or foreign run file: run `t2ibias generate {root}` to remake the image in the run"
    if not isinstance(rel, str) or not rel.strip() or "\x00" in rel:
        raise UserError(f"{where}: {rel!r} is not a relative file path ({fix})")
    parts = rel.replace("\\", "/").split("/")
    if rel.startswith(("/", "\\")) or Path(rel).is_absolute() or (len(parts[0]) > 1 and parts[0][1] == ":") or ".." in parts:
        raise UserError(f"{where}: {rel!r} leaves the run directory (absolute or with '..'; {fix})")
    path = Path(root) / rel
    try:
        path.resolve().relative_to(Path(root).resolve())
    except ValueError:
        raise UserError(f"{where}: {rel!r} leads outside the run directory through a link ({fix})") from None
    except OSError as exc:  # a symlink loop
        raise UserError(f"{where}: {rel!r} cannot be resolved ({exc.strerror or exc}; {fix})") from None
    return path


def read_jsonl(path: Path, skipped: list[int] | None = None) -> Iterable[dict[str, Any]]:
    """Rows of a JSON-lines file; a malformed line (e.g. cut short by a crash) is skipped and,
    when ``skipped`` is given, counted in ``skipped[0]``."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if isinstance(row, dict) and row.get("key"):
                yield row
            elif skipped is not None:
                skipped[0] += 1


class ImageStore:
    """Images and manifest of one run directory; ``worker`` names this process's manifest shard."""

    def __init__(self, run_dir: str | Path, worker: str = "0") -> None:
        self.root = Path(run_dir)
        self.images_dir = self.root / "images"
        self.worker = worker
        self.manifest_path = self.root / f"manifest-{worker}.jsonl"
        self._fh: Any = None
        #: Malformed manifest lines skipped by the last :meth:`records` call.
        self.malformed_lines = 0
        #: Key → the manifest shard its current row was read from, by the last :meth:`records` call.
        self.sources: dict[str, Path] = {}
        self._folders_inside: dict[str, bool] = {}

    # -- reading -------------------------------------------------------------------------------
    def manifest_files(self) -> list[Path]:
        """The shards in read order: the compacted ``manifest.jsonl`` first, since shards are newer."""
        return sorted(self.root.glob(MANIFEST_GLOB), key=lambda p: (p.name != "manifest.jsonl", p.name))

    def records(self) -> dict[str, dict[str, Any]]:
        """Merged manifest: key → row. For a key written more than once the last line wins."""
        merged: dict[str, dict[str, Any]] = {}
        sources: dict[str, Path] = {}
        skipped = [0]
        for path in self.manifest_files():
            for row in read_jsonl(path, skipped):
                merged[row["key"]] = row
                sources[row["key"]] = path
        self.malformed_lines = skipped[0]
        self.sources = sources
        return merged

    def statuses(self) -> dict[str, Any]:
        """Key → ``status`` of the merged manifest (:meth:`records`, the last line of a key winning),
        without keeping every row: a million rows as dicts take gigabytes."""
        merged: dict[str, Any] = {}
        skipped = [0]
        for path in self.manifest_files():
            fast = _key_status(path)
            if fast is not None:
                merged.update(fast)
                continue
            for row in read_jsonl(path, skipped):
                merged[row["key"]] = row.get("status")
        self.malformed_lines = skipped[0]
        return merged

    def image_file(self, row: dict[str, Any]) -> Path:
        """The file a manifest row's ``path`` names, confined to the run directory (else :class:`UserError`
        naming the shard, the key and the field)."""
        source = self.sources.get(str(row.get("key")), self.root / "manifest*.jsonl")
        return confined_path(self.root, row.get("path"), f"{source}: key {row.get('key')}: field path")

    def path_for(self, key: str) -> Path:
        return self.images_dir / key[:2] / f"{key}.png"

    def _own_file(self, row: dict[str, Any]) -> str | None:
        """The image path of a row in the layout :meth:`put` writes (``images/<k0k1>/<key>.png``) when
        its folder lies inside the run (resolved once per folder), else None (then
        :meth:`image_file` checks the path in full). Resolving every path costs a system call per
        path component: most of a resume check at 100k images."""
        key, rel = row.get("key"), row.get("path")
        if not (isinstance(key, str) and _PLAIN_KEY.fullmatch(key) and rel == f"images/{key[:2]}/{key}.png"):
            return None
        folder = key[:2]
        if folder not in self._folders_inside:
            try:
                (self.images_dir / folder).resolve().relative_to(self.root.resolve())
                self._folders_inside[folder] = True
            except (ValueError, OSError):
                self._folders_inside[folder] = False
        return f"{self.images_dir}{os.sep}{folder}{os.sep}{key}.png" if self._folders_inside[folder] else None

    def is_intact(self, row: dict[str, Any], deep: bool = True) -> bool:
        """True when a finished row's image is on disk as recorded: with ``deep``, its sha256 matches;
        without, its size matches the recorded ``bytes`` (rows without a size: its sha256)."""
        return self.problem(row, deep) is None

    def problem(self, row: dict[str, Any], deep: bool = True) -> str | None:
        """What is wrong with a row's image (``missing``, ``N bytes, manifest says M``, ``sha256
        differs``), or None when it is intact (blocked rows always are, failed ones never)."""
        if row.get("status") != OK:
            return None if row.get("status") == BLOCKED else f"status {row.get('status')}"
        try:
            path = None if deep else self._own_file(row)
            if path is not None:  # the layout put() writes, in folders checked once: lstat, no resolve
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode):
                    return "not a regular file"
            else:
                path = self.image_file(row)
                st = path.stat()
            size = st.st_size
        except UserError as exc:  # a path outside the run is never read: the image is remade
            return str(exc)
        except OSError:
            return "missing"
        recorded = row.get("bytes")
        if isinstance(recorded, int) and not isinstance(recorded, bool) and size != recorded:
            return f"{size} bytes, manifest says {recorded}"
        if deep or not isinstance(recorded, int):
            try:
                digest = _sha256_file(path)
            except OSError:
                return "unreadable"
            if digest != row.get("sha256"):
                return "sha256 differs from the manifest"
        return None

    def done_keys(self, keys: Iterable[str], verify: bool = True, deep: bool = False) -> set[str]:
        """Keys among ``keys`` that need no work: intact images (:meth:`is_intact`, by size unless
        ``deep``) and safety-checker blocks; with ``verify=False`` the manifest alone decides.

        Failed rows are retried; so are images that are missing or of another size than recorded.
        """
        records = self.records()
        done = set()
        for key in keys:
            row = records.get(key)
            if row is not None and (self.is_intact(row, deep) if verify else row.get("status") in (OK, BLOCKED)):
                done.add(key)
        return done

    # -- writing -------------------------------------------------------------------------------
    def remove_temp_files(self) -> int:
        """Delete temporary files left by a writer killed mid-write; returns how many."""
        n = 0
        for pattern in (".*.tmp", "images/*/.*.tmp"):
            for path in self.root.glob(pattern):
                path.unlink(missing_ok=True)
                n += 1
        return n

    def put(self, key: str, png: bytes | None, row: dict[str, Any]) -> dict[str, Any]:
        """Store one image (atomic rename first), then append its manifest line and flush it."""
        row = dict(row, key=key)
        if png is not None:
            path = self.path_for(key)
            atomic_write_bytes(path, png)
            row.update(path=path.relative_to(self.root).as_posix(), sha256=hashlib.sha256(png).hexdigest(), bytes=len(png))
        self._append(row)
        return row

    def _append(self, row: dict[str, Any]) -> None:
        if self._fh is None:
            self.root.mkdir(parents=True, exist_ok=True)
            needs_newline = self.manifest_path.exists() and self.manifest_path.stat().st_size > 0 and not self.manifest_path.read_bytes().endswith(b"\n")
            self._fh = open(self.manifest_path, "a", encoding="utf-8")
            if needs_newline:  # a previous run died mid-line
                self._fh.write("\n")
        self._fh.write(json.dumps(row, sort_keys=True) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def compact(self) -> bool:
        """Rewrite the shards as one ``manifest.jsonl`` with one line per key, if they hold repeats.

        Returns True when it rewrote. Safe at any crash point: readers merge all shards and keep
        the last line per key, so a half-finished compaction reads the same.
        """
        self.close()
        files = self.manifest_files()
        lines = 0
        for path in files:
            with open(path, encoding="utf-8", errors="replace") as fh:
                lines += sum(1 for line in fh if line.strip())
        merged = self.records()
        if lines == len(merged) and len(files) <= 1:
            return False
        target = self.root / "manifest.jsonl"
        atomic_write_text(target, "".join(json.dumps(r, sort_keys=True) + "\n" for r in merged.values()))
        for path in files:
            if path != target:
                path.unlink(missing_ok=True)
        return True

    def drop(self, keys: Iterable[str]) -> int:
        """Remove every manifest line of ``keys`` (their images are then made again by the next
        ``generate``), rewriting the shards as one ``manifest.jsonl``; returns how many keys it
        dropped. Image files are left where they are: the next ``generate`` replaces them."""
        self.close()
        gone = set(keys)
        merged = self.records()
        hit = gone & set(merged)
        if not hit:
            return 0
        files = self.manifest_files()
        target = self.root / "manifest.jsonl"
        atomic_write_text(target, "".join(json.dumps(r, sort_keys=True) + "\n" for k, r in merged.items() if k not in gone))
        for path in files:
            if path != target:
                path.unlink(missing_ok=True)
        return len(hit)


def _key_status(path: Path) -> dict[str, Any] | None:
    """Key → status of a well-formed shard, read by Arrow's JSON reader (a second for a million
    lines, against ten by ``json.loads``); None when any line is not a JSON object with a text key
    and a text status (a line cut short, another type), so the caller reads it line by line."""
    import pyarrow as pa
    from pyarrow import json as pa_json

    schema = pa.schema([("key", pa.string()), ("status", pa.string())])
    try:
        table = pa_json.read_json(path, parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"))
    except (pa.ArrowException, OSError, ValueError):
        return None
    keys = table.column("key").to_pylist()
    if any(not k for k in keys):  # a row without a key: the line-by-line reader skips and counts it
        return None
    return dict(zip(keys, table.column("status").to_pylist()))


def _sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file read in 1 MiB pieces (an SDXL PNG is ~1.5 MB; memory stays flat)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
