"""Loading a FACET release (annotations only; images are not needed to score predictions).

``<root>/annotations/annotations.csv`` holds one row per person with their classes, box and
perceived-attribute columns; ``coco_boxes.json`` gives the images (ids, file names, sizes) and
the COCO annotation of each person (annotation ``id`` = ``person_id``); ``coco_masks.json``
(optional) holds SAM person masks as RLE with an extra ``person_id`` field.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from t2ibias.core.errors import UserError, decode_error_message

REQUIRED_COLUMNS = ("person_id", "filename", "class1", "class2", "bounding_box")
#: The perceived-attribute columns of the release's annotations.csv (Gustafson et al., ICCV 2023),
#: spelled as in the file. Every one is required: a missing column would silently drop its groups.
ATTRIBUTE_COLUMNS = (
    tuple(f"gender_presentation_{g}" for g in ("masc", "fem", "non_binary", "na"))
    + tuple(f"skin_tone_{i}" for i in range(1, 11)) + ("skin_tone_na",)
    + tuple(f"age_presentation_{g}" for g in ("young", "middle", "older", "na"))
    + tuple(f"hair_color_{g}" for g in ("black", "blonde", "brown", "red", "colored", "grey", "na"))
    + tuple(f"hairtype_{g}" for g in ("wavy", "curly", "straight", "coily", "dreadlocks", "bald", "na"))
    + ("has_facial_hair", "has_tattoo", "has_cap", "has_mask", "has_headscarf", "has_eyeware")
    + tuple(f"lighting_{g}" for g in ("well_lit", "dimly_lit", "underexposed", "overexposed", "na"))
    + tuple(f"visible_{g}" for g in ("torso", "face", "minimal"))
)
BOX_KEYS = ("x", "y", "width", "height")


#: FACET scores at most this many detections per image (COCO's maxDets).
MAX_DETS = 100


def canonical_class(name: str) -> str:
    """A FACET class in its one spelling: words joined by single spaces (``disk_jockey`` and
    ``disk  jockey`` are ``disk jockey``). Scripts around the release write multi-word classes
    with underscores; the loader and predictions files accept either."""
    return " ".join(name.replace("_", " ").split())


@dataclass
class FacetData:
    """People (one row each, CSV order) and images of a FACET release.

    ``people`` has the CSV columns plus ``image_id``, ``box_x``, ``box_y``, ``box_w``, ``box_h``,
    ``iscrowd`` and ``classes`` (a tuple: class1 and, when present, class2).
    ``images`` has ``id``, ``file_name``, ``width``, ``height``.
    ``masks`` maps person_id to the RLE of that person's mask (empty when no coco_masks.json).
    """

    root: Path
    people: pd.DataFrame
    images: pd.DataFrame
    masks: dict[int, dict[str, Any]] = field(default_factory=dict)

    def image_paths(self) -> dict[int, Path]:
        """Image id → path of the image file, found under ``<root>/imgs_*/`` (the release's
        folders), ``<root>/images/`` or ``<root>/``. Raises a UserError naming the first image
        that is missing; only needed when a model is run on the images."""
        found: dict[str, Path] = {}
        folders = sorted(p for p in self.root.glob("imgs_*") if p.is_dir())
        folders += [p for p in (self.root / "images", self.root) if p.is_dir()]
        for folder in folders:
            for f in folder.iterdir():
                if f.suffix.lower() in (".jpg", ".jpeg", ".png") and f.name not in found:
                    found[f.name] = f
        out: dict[int, Path] = {}
        for img_id, fname in zip(self.images["id"], self.images["file_name"]):
            path = found.get(Path(str(fname)).name)
            if path is None:
                raise UserError(
                    f"{self.root}: image {fname!r} (id {img_id}) not found under imgs_*/ "
                    "(download and unpack the FACET image archives into the FACET root)"
                )
            out[int(img_id)] = path
        return out

    def image_sizes(self) -> dict[int, tuple[int, int] | None]:
        """Image id → ``(height, width)`` from ``coco_boxes.json``, or None where the size is not a
        pair of integers (images and masks are then not checked against it)."""
        out: dict[int, tuple[int, int] | None] = {}
        for i, w, h in zip(self.images["id"], self.images["width"], self.images["height"]):
            try:
                out[int(i)] = (int(h), int(w))
            except (TypeError, ValueError):
                out[int(i)] = None
        return out

    @property
    def classes(self) -> list[str]:
        seen: dict[str, None] = {}
        for cls in self.people["classes"]:
            for c in cls:
                seen.setdefault(c, None)
        return sorted(seen)


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found (pass the FACET root that holds annotations/)") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a file (pass the FACET root that holds annotations/)") from None
    except UnicodeDecodeError:
        raise UserError(decode_error_message(path)) from None
    except (ValueError, RecursionError) as exc:
        raise UserError(f"{path}: not valid JSON: {exc} (re-download the file)") from None


def _parse_box(text: Any, where: str) -> tuple[float, float, float, float]:
    try:
        box = ast.literal_eval(str(text))
    except (ValueError, SyntaxError):
        raise UserError(
            f"{where}: column bounding_box: cannot parse {str(text)[:60]!r} "
            "(write it as {'x': .., 'y': .., 'width': .., 'height': ..})"
        ) from None
    if not isinstance(box, dict) or any(k not in box for k in BOX_KEYS):
        raise UserError(
            f"{where}: column bounding_box: needs keys x, y, width, height, got {str(text)[:60]!r} "
            "(write it as {'x': .., 'y': .., 'width': .., 'height': ..})"
        )
    try:
        vals = tuple(float(box[k]) for k in BOX_KEYS)
    except (TypeError, ValueError):
        raise UserError(f"{where}: column bounding_box: values must be numbers, got {str(text)[:60]!r} (fix the values)") from None
    if not all(math.isfinite(v) for v in vals):
        raise UserError(f"{where}: column bounding_box: values must be finite (fix the values)")
    if vals[2] < 0 or vals[3] < 0:
        raise UserError(f"{where}: column bounding_box: negative width or height {vals[2]}x{vals[3]} (fix the box size)")
    return vals  # type: ignore[return-value]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _attribute_columns(columns: list[str]) -> list[str]:
    from facet_eval.groups import attribute_of_column

    return [c for c in columns if attribute_of_column(c) is not None]


def load_facet(root: str | Path) -> FacetData:
    """Read and validate ``<root>/annotations/{annotations.csv, coco_boxes.json[, coco_masks.json]}``."""
    root = Path(root)
    ann_dir = root / "annotations"
    csv_path = ann_dir / "annotations.csv"
    df = _read_annotations_csv(csv_path)
    people, lines = _people_frame(df, csv_path)
    boxes_path = ann_dir / "coco_boxes.json"
    images, ann_by_pid = _read_coco_boxes(boxes_path)
    _link_images(people, lines, images, ann_by_pid, csv_path, boxes_path)
    masks_path = ann_dir / "coco_masks.json"
    masks = _read_person_masks(masks_path) if masks_path.is_file() else {}
    return FacetData(root=root, people=people, images=images, masks=masks)


def _read_annotations_csv(csv_path: Path) -> pd.DataFrame:
    """annotations.csv as strings, with every required and attribute column and at least one row."""
    if not csv_path.is_file():
        raise UserError(f"{csv_path}: file not found (pass the FACET root that holds annotations/annotations.csv)")
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except UnicodeDecodeError:
        raise UserError(decode_error_message(csv_path)) from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{csv_path}:1: empty file, no header (use the release's annotations.csv)") from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise UserError(f"{csv_path}: cannot read CSV: {exc} (re-download the file)") from None
    df.columns = [c.strip() for c in df.columns]
    for col in REQUIRED_COLUMNS:
        if col not in df.columns:
            raise UserError(f"{csv_path}:1: column {col}: missing from the header (use the release's annotations.csv)")
    missing = [c for c in ATTRIBUTE_COLUMNS if c not in df.columns]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise UserError(
            f"{csv_path}:1: column{'s' if len(missing) > 1 else ''} {shown}: missing from the header; without "
            f"{'them' if len(missing) > 1 else 'it'} those groups would silently vanish from every result "
            "(use the release's annotations.csv, or add the columns with 0 where nobody was annotated)"
        )
    if df.empty:
        raise UserError(f"{csv_path}:2: no people (the file has a header but no rows; use the release's annotations.csv)")
    return df


def _people_frame(df: pd.DataFrame, csv_path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """The people (ids, filename, classes, attribute values, box) and the CSV line of each row."""
    n = len(df)
    lines = np.arange(n) + 2  # header is line 1
    pids = np.empty(n, dtype=np.int64)
    for i, v in enumerate(df["person_id"]):
        try:
            pids[i] = int(float(v))
        except ValueError:
            raise UserError(f"{csv_path}:{lines[i]}: column person_id: not an integer: {v!r} (fix the id)") from None
    dup = pd.Series(pids).duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise UserError(f"{csv_path}:{lines[i]}: column person_id: duplicate id {pids[i]} (each person needs one row)")
    boxes = np.array([_parse_box(t, f"{csv_path}:{lines[i]}") for i, t in enumerate(df["bounding_box"])], dtype=float).reshape(n, 4)

    people = pd.DataFrame({"person_id": pids, "filename": df["filename"].str.strip()})
    for col in ("class1", "class2"):
        people[col] = pd.Series(
            [None if v.strip() in ("", "None", "none", "nan", "NaN") else canonical_class(v) for v in df[col]], dtype=object
        )
    for col in _attribute_columns(list(df.columns)):
        raw = df[col].str.strip()
        vals = pd.to_numeric(raw.replace({"": "nan", "None": "nan"}), errors="coerce")
        bad = vals.isna() & ~raw.isin(["", "None", "nan", "NaN"])
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise UserError(f"{csv_path}:{lines[i]}: column {col}: not a number: {raw.iloc[i]!r} (use 0/1 or vote counts)")
        people[col] = vals.to_numpy(dtype=float)
    people["box_x"], people["box_y"], people["box_w"], people["box_h"] = boxes.T if n else ([], [], [], [])
    people["classes"] = pd.Series(
        [tuple(c for c in (a, b) if c) for a, b in zip(people["class1"], people["class2"])], dtype=object
    )
    for i, c in enumerate(people["class1"]):
        if c is None:
            raise UserError(f"{csv_path}:{lines[i]}: column class1: empty (every person needs a primary class)")
    return people, lines


def _read_coco_boxes(boxes_path: Path) -> tuple[pd.DataFrame, dict[int, dict[str, Any]]]:
    """The images of coco_boxes.json (id, file_name, width, height) and its annotations by id (= person_id)."""
    coco = _read_json(boxes_path)
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list) or not isinstance(coco.get("annotations"), list):
        raise UserError(f"{boxes_path}: needs COCO lists 'images' and 'annotations' (use the release's coco_boxes.json)")
    img_rows = []
    for k, im in enumerate(coco["images"]):
        if not isinstance(im, dict) or "id" not in im:
            raise UserError(f"{boxes_path}: images[{k}]: field id missing (use the release's coco_boxes.json)")
        if not _is_int(im["id"]):
            raise UserError(f"{boxes_path}: images[{k}]: field id: not an integer: {im['id']!r} (use the release's coco_boxes.json)")
        img_rows.append({"id": int(im["id"]), "file_name": str(im.get("file_name", "")),
                         "width": im.get("width"), "height": im.get("height")})
    images = pd.DataFrame(img_rows, columns=["id", "file_name", "width", "height"])
    ann_by_pid: dict[int, dict[str, Any]] = {}
    for k, a in enumerate(coco["annotations"]):
        if not isinstance(a, dict) or "id" not in a or "image_id" not in a:
            raise UserError(f"{boxes_path}: annotations[{k}]: fields id and image_id are required (use the release's coco_boxes.json)")
        for key in ("id", "image_id"):
            if not _is_int(a[key]):
                raise UserError(f"{boxes_path}: annotations[{k}]: field {key}: not an integer: {a[key]!r} (use the release's coco_boxes.json)")
        ann_by_pid[int(a["id"])] = a
    return images, ann_by_pid


def _link_images(people: pd.DataFrame, lines: np.ndarray, images: pd.DataFrame,
                 ann_by_pid: dict[int, dict[str, Any]], csv_path: Path, boxes_path: Path) -> None:
    """Add each person's ``image_id`` (from their COCO annotation, else their file name) and ``iscrowd``."""
    n = len(people)
    by_name = {Path(f).name: i for f, i in zip(images["file_name"], images["id"])}
    image_ids = np.empty(n, dtype=np.int64)
    crowd = np.zeros(n, dtype=np.int64)
    known = set(images["id"].tolist())
    for i, (pid, fname) in enumerate(zip(people["person_id"], people["filename"])):
        a = ann_by_pid.get(int(pid))
        if a is not None:
            image_ids[i] = int(a["image_id"])
            crowd[i] = int(a.get("iscrowd", 0) or 0)
        elif Path(fname).name in by_name:
            image_ids[i] = by_name[Path(fname).name]
        else:
            raise UserError(
                f"{csv_path}:{lines[i]}: column filename: {fname!r} (person {pid}) has no image in {boxes_path.name} "
                "(use matching annotations.csv and coco_boxes.json)"
            )
        if image_ids[i] not in known:
            raise UserError(f"{boxes_path}: annotation {pid}: image_id {image_ids[i]} is not in images (use the release's file)")
    people["image_id"] = image_ids
    people["iscrowd"] = crowd


def _read_person_masks(masks_path: Path) -> dict[int, dict[str, Any]]:
    """person_id → RLE of the person masks in coco_masks.json (masks of other categories left out)."""
    mcoco = _read_json(masks_path)
    if not isinstance(mcoco, dict):
        raise UserError(f"{masks_path}: needs COCO keys 'annotations' and 'categories' (use the release's coco_masks.json)")
    for key in ("categories", "annotations"):
        if not isinstance(mcoco.get(key) or [], list):
            raise UserError(f"{masks_path}: field {key}: not a list (use the release's coco_masks.json)")
    cats = {c.get("id"): str(c.get("name", "")) for c in (mcoco.get("categories") or []) if isinstance(c, dict)}
    masks: dict[int, dict[str, Any]] = {}
    for k, a in enumerate(mcoco.get("annotations") or []):
        if not isinstance(a, dict) or "person_id" not in a or "segmentation" not in a:
            raise UserError(f"{masks_path}: annotations[{k}]: fields person_id and segmentation are required (use the release's file)")
        if not _is_int(a["person_id"]):
            raise UserError(f"{masks_path}: annotations[{k}]: field person_id: not an integer: {a['person_id']!r} (use the release's file)")
        if cats and cats.get(a.get("category_id")) not in ("person", None):
            continue
        masks[int(a["person_id"])] = a["segmentation"]
    return masks


def single_person_mask(data: FacetData) -> np.ndarray:
    """True for each person (row of ``data.people``) who is the only annotated person of their image."""
    image_ids = data.people["image_id"].to_numpy()
    if len(image_ids) == 0:
        return np.zeros(0, dtype=bool)
    uniq, counts = np.unique(image_ids, return_counts=True)
    per_image = dict(zip(uniq.tolist(), counts.tolist()))
    return np.array([per_image[i] == 1 for i in image_ids.tolist()], dtype=bool)
