"""Small FACET-format datasets for tests: ``<root>/annotations/annotations.csv`` (release column
spellings) and ``coco_boxes.json``, plus predictions whose per-group recall is known."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

ATTRIBUTE_COLUMNS = (
    [f"gender_presentation_{g}" for g in ("masc", "fem", "non_binary", "na")]
    + [f"skin_tone_{i}" for i in range(1, 11)] + ["skin_tone_na"]
    + [f"age_presentation_{g}" for g in ("young", "middle", "older", "na")]
    + [f"hair_color_{g}" for g in ("black", "blonde", "brown", "red", "colored", "grey", "na")]
    + [f"hairtype_{g}" for g in ("wavy", "curly", "straight", "coily", "dreadlocks", "bald", "na")]
    + ["has_facial_hair", "has_tattoo", "has_cap", "has_mask", "has_headscarf", "has_eyeware"]
    + [f"lighting_{g}" for g in ("well_lit", "dimly_lit", "underexposed", "overexposed", "na")]
    + [f"visible_{g}" for g in ("torso", "face", "minimal")]
)
COLUMNS = ["person_id", "filename", "class1", "class2", "bounding_box"] + ATTRIBUTE_COLUMNS
CLASSES = ["nurse", "doctor", "farmer"]


def person(pid: int, image_id: int, box: list[float], class1: str = "nurse", class2: str | None = None,
           **attrs: float) -> dict[str, Any]:
    """A person row; ``attrs`` are attribute columns set to the given value (others 0)."""
    row: dict[str, Any] = {c: 0 for c in ATTRIBUTE_COLUMNS}
    for k, v in attrs.items():
        assert k in ATTRIBUTE_COLUMNS, k
        row[k] = v
    x, y, w, h = box
    row.update(person_id=pid, filename=f"sa_{image_id}.jpg", class1=class1, class2=class2 or "None",
               bounding_box=str({"x": x, "y": y, "width": w, "height": h}), _image_id=image_id, _box=list(box))
    return row


def write_facet(root: Path, people: list[dict[str, Any]], image_ids: list[int],
                columns: list[str] | None = None) -> Path:
    """Write a FACET root with the given people on images ``image_ids`` (some may have no people)."""
    ann = Path(root) / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    columns = columns or COLUMNS
    with open(ann / "annotations.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for p in people:
            w.writerow([p[c] for c in columns])
    names = list(dict.fromkeys(CLASSES + [p["class1"] for p in people]))
    coco = {
        "images": [{"id": i, "file_name": f"sa_{i}.jpg", "width": 1000, "height": 1000} for i in image_ids],
        "annotations": [
            {"id": p["person_id"], "image_id": p["_image_id"], "bbox": p["_box"],
             "area": p["_box"][2] * p["_box"][3], "iscrowd": 0, "category_id": names.index(p["class1"]) + 1}
            for p in people
        ],
        "categories": [{"id": k + 1, "name": c} for k, c in enumerate(names)],
    }
    (ann / "coco_boxes.json").write_text(json.dumps(coco), encoding="utf-8")
    return Path(root)


def det(image_id: int, box: list[float], score: float) -> dict[str, Any]:
    return {"image_id": image_id, "bbox": list(box), "score": score, "category_id": 1}


def write_predictions(path: Path, dets: list[dict[str, Any]]) -> Path:
    Path(path).write_text(json.dumps(dets), encoding="utf-8")
    return Path(path)


FULL = [0, 0, 100, 100]
IOU_077 = [0, 0, 100, 77]  # IoU 0.77 with FULL: matched at 0.50 ... 0.75 (6 of 10 thresholds)
IOU_062 = [0, 0, 100, 62]  # IoU 0.62: matched at 0.50, 0.55, 0.60 (3 of 10)


def known_dataset(root: Path) -> tuple[Path, list[dict[str, Any]], dict[str, dict[str, float]]]:
    """One person per image unless noted. Expected (AR50, AR75, mAR) per gender group:

    masc (60): 30 exact, 15 at IoU 0.77, 15 missed → 0.75, 0.75, 0.65
    fem (60): 20 exact, 10 at IoU 0.62, 30 missed → 0.5, 1/3, 23/60
    non_binary (5): all exact → 1, 1, 1 (too few to compare)
    Masc exact people have MST 1 and 2 (several groups); fem missed people MST 9 and 10.
    Extra images: one with no people but a detection; one with two detections on one person.
    """
    people: list[dict[str, Any]] = []
    dets: list[dict[str, Any]] = []
    img = 0

    def add(kind: str, attrs: dict[str, float], cls: str = "nurse", cls2: str | None = None) -> None:
        nonlocal img
        img += 1
        people.append(person(img, img, FULL, cls, cls2, **attrs))
        if kind == "exact":
            dets.append(det(img, FULL, 0.9))
        elif kind == "077":
            dets.append(det(img, IOU_077, 0.8))
        elif kind == "062":
            dets.append(det(img, IOU_062, 0.7))

    for k in range(60):
        kind = "exact" if k < 30 else "077" if k < 45 else "miss"
        attrs = {"gender_presentation_masc": 1, "skin_tone_1": 2, "skin_tone_2": 1} if kind == "exact" else \
            {"gender_presentation_masc": 1, "skin_tone_5": 1, "skin_tone_6": 2}
        attrs["has_eyeware"] = 1 if k % 2 else 0
        attrs["hairtype_wavy"] = 1
        add(kind, attrs, cls="doctor" if k < 10 else "nurse", cls2="farmer" if k == 0 else None)
    for k in range(60):
        kind = "exact" if k < 20 else "062" if k < 30 else "miss"
        attrs = {"gender_presentation_fem": 1, "skin_tone_9": 1, "skin_tone_10": 2} if kind == "miss" else \
            {"gender_presentation_fem": 1, "skin_tone_4": 3}
        add(kind, attrs)
    for _ in range(5):
        add("exact", {"gender_presentation_non_binary": 1, "skin_tone_na": 1})
    # an image with no people and a false positive
    img += 1
    dets.append(det(img, FULL, 0.99))
    # duplicate detections on one person: still one match
    img += 1
    people.append(person(1000, img, FULL, "farmer", gender_presentation_na=1, skin_tone_3=1))
    dets += [det(img, FULL, 0.95), det(img, FULL, 0.94), det(img, [1, 1, 99, 99], 0.5)]
    image_ids = list(range(1, img + 1))
    write_facet(root, people, image_ids)
    expected = {
        "masc": {"AR50": 0.75, "AR75": 0.75, "mAR": 0.65, "n": 60},
        "fem": {"AR50": 0.5, "AR75": 1 / 3, "mAR": 23 / 60, "n": 60},
        "non_binary": {"AR50": 1.0, "AR75": 1.0, "mAR": 1.0, "n": 5},
        "na": {"AR50": 1.0, "AR75": 1.0, "mAR": 1.0, "n": 1},
    }
    return root, dets, expected


def write_images(root: Path, image_ids: list[int], size: tuple[int, int] = (1000, 1000), folder: str = "imgs_1",
                 seed: int = 0) -> dict[int, Path]:
    """Write noise JPEGs ``<root>/<folder>/sa_<id>.jpg`` for images of a fixture release."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = {}
    d = Path(root) / folder
    d.mkdir(parents=True, exist_ok=True)
    for i in image_ids:
        arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        out[i] = d / f"sa_{i}.jpg"
        Image.fromarray(arr).save(out[i], quality=90)
    return out


#: Images of :func:`model_release`: id → (width, height); three sizes, so a batch mixes sizes.
MODEL_RELEASE_SIZES = {1: (128, 96), 2: (96, 128), 3: (128, 96), 4: (112, 112)}


def model_release(root: Path) -> Path:
    """A release for model runs: the images of :data:`MODEL_RELEASE_SIZES` (noise JPEGs at their
    annotated sizes), two people on image 1, one on images 2 and 3 (classification's examples),
    none on image 4; every person has a person mask (their box) in ``coco_masks.json``."""
    import numpy as np
    from pycocotools import mask as mask_utils

    people = [
        person(1, 1, [10, 10, 40, 60], "nurse", gender_presentation_masc=1, skin_tone_2=1),
        person(2, 1, [60, 20, 30, 50], "doctor", gender_presentation_fem=1, skin_tone_9=1),
        person(3, 2, [5, 5, 80, 100], "farmer", gender_presentation_fem=1, skin_tone_5=1),
        person(4, 3, [20, 10, 60, 70], "doctor", gender_presentation_masc=1, skin_tone_3=1),
    ]
    write_facet(root, people, list(MODEL_RELEASE_SIZES))
    ann = Path(root) / "annotations"
    coco = json.loads((ann / "coco_boxes.json").read_text(encoding="utf-8"))
    for im in coco["images"]:
        im["width"], im["height"] = MODEL_RELEASE_SIZES[im["id"]]
    (ann / "coco_boxes.json").write_text(json.dumps(coco), encoding="utf-8")
    masks = []
    for p in people:
        w, h = MODEL_RELEASE_SIZES[p["_image_id"]]
        m = np.zeros((h, w), dtype=np.uint8)
        x, y, bw, bh = p["_box"]
        m[y:y + bh, x:x + bw] = 1
        rle = mask_utils.encode(np.asfortranarray(m))
        masks.append({"id": 100 + p["person_id"], "person_id": p["person_id"], "image_id": p["_image_id"],
                      "category_id": 1, "iscrowd": 0, "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")}})
    (ann / "coco_masks.json").write_text(json.dumps({"images": coco["images"], "annotations": masks,
                                                     "categories": [{"id": 1, "name": "person"}]}), encoding="utf-8")
    for i, size in MODEL_RELEASE_SIZES.items():
        write_images(root, [i], size=size, seed=i)
    return Path(root)
