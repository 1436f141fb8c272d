"""FACET person-detection benchmark at release scale, on synthetic data.

Builds a FACET-format root in a temporary folder (default 31,702 images and 49,551 people as
in the release, 52 classes, every attribute column with the release spelling, about
``--dets`` detections per image: jittered copies of the people's boxes plus random boxes),
then times

(a) ``evaluate_detection``: one class-agnostic pycocotools matching pass, then AR50/AR75/mAR
    with image-bootstrap intervals for every attribute group, every class and the
    ``skin_tone_bucket & gender_presentation`` intersections, with disparities (joint
    image-bootstrap intervals, tests, q-values and Bonferroni intervals);
(b) one plain pycocotools ``COCOeval`` bbox pass (class-agnostic, default parameters:
    COCO construction + evaluate + accumulate) on the same people and detections;
(c) the naive way: one ``COCOeval`` (evaluate + accumulate) per (class, group) cell, restricted
    to that cell's people and images. Only ``--naive-sample`` cells run; their time per image
    involved is scaled to the image counts of all cells.

Prints the ratios (a)/(b) and (c)/(a) and the process's peak resident memory.

``--coverage R`` instead runs a Monte Carlo check of the intervals on R seeded synthetic scenes
(``tests/test_facet_stats.py``: 4 people per image sharing a detection probability, intra-image
correlation 0.5, skin-tone groups MST 3 and 4 that overlap, no true gap): the share of scenes whose
95 % interval holds the true AR50 and the true gap 0, with images resampled and, for comparison,
with every person alone in an image (people resampled).

    python benchmarks/bench_facet.py [--images 31702] [--people 49551] [--dets 10] [--seed 0]
    python benchmarks/bench_facet.py --coverage 400 [--coverage-images 200]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from facet_eval.data import load_facet
from facet_eval.detection import evaluate_detection, load_predictions
from facet_eval.groups import attribute_of_column, group_membership, intersect
from tests.facet_fixtures import ATTRIBUTE_COLUMNS

N_CLASSES = 52
INTERSECT = ("skin_tone_bucket", "gender_presentation")


def _one_hot(rng, n, cols, p=None):
    out = np.zeros((n, len(cols)), dtype=np.int64)
    out[np.arange(n), rng.choice(len(cols), size=n, p=p)] = 1
    return dict(zip(cols, out.T))


def make_dataset(root: Path, n_images: int, n_people: int, dets_per_image: float, seed: int):
    rng = np.random.default_rng(seed)
    n_people = max(n_people, 1)
    # every image has at least one person when there are enough people
    img_of = np.concatenate([np.arange(min(n_images, n_people)),
                             rng.integers(0, n_images, max(0, n_people - n_images))]) + 1
    img_of.sort()
    x = rng.uniform(0, 800, n_people).round(1)
    y = rng.uniform(0, 800, n_people).round(1)
    w = rng.uniform(20, 400, n_people).round(1)
    h = rng.uniform(40, 600, n_people).round(1)
    classes = [f"class_{k:02d}" for k in range(N_CLASSES)]
    c1 = rng.integers(0, N_CLASSES, n_people)
    c2 = np.where(rng.random(n_people) < 0.1, rng.integers(0, N_CLASSES, n_people), -1)
    cols: dict[str, np.ndarray] = {}
    groups: dict[str, list[str]] = {}
    for col in ATTRIBUTE_COLUMNS:
        groups.setdefault(attribute_of_column(col)[0], []).append(col)
    for attr, members in groups.items():
        if attr.startswith("has_"):
            cols[attr] = (rng.random(n_people) < 0.15).astype(np.int64)
        elif attr == "skin_tone":
            lo = rng.integers(0, 9, n_people)  # two adjacent MST values, vote counts
            mat = np.zeros((n_people, 10), dtype=np.int64)
            mat[np.arange(n_people), lo] = rng.integers(1, 4, n_people)
            mat[np.arange(n_people), lo + 1] = rng.integers(1, 3, n_people)
            cols.update(zip([f"skin_tone_{v}" for v in range(1, 11)], mat.T))
            cols["skin_tone_na"] = np.zeros(n_people, dtype=np.int64)
        else:
            cols.update(_one_hot(rng, n_people, members))
    pids = np.arange(1, n_people + 1)
    boxes = [f"{{'x': {a}, 'y': {b}, 'width': {c}, 'height': {d}}}" for a, b, c, d in zip(x, y, w, h)]
    df = pd.DataFrame({"person_id": pids, "filename": [f"sa_{i}.jpg" for i in img_of],
                       "class1": [classes[k] for k in c1],
                       "class2": [classes[k] if k >= 0 else "None" for k in c2], "bounding_box": boxes})
    df = pd.concat([df, pd.DataFrame({c: cols[c] for c in ATTRIBUTE_COLUMNS})], axis=1)
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    df.to_csv(ann / "annotations.csv", index=False)
    coco = {
        "images": [{"id": i, "file_name": f"sa_{i}.jpg", "width": 1500, "height": 1500} for i in range(1, n_images + 1)],
        "annotations": [{"id": int(p), "image_id": int(i), "bbox": [float(a), float(b), float(c), float(d)],
                         "area": float(c * d), "iscrowd": 0, "category_id": int(k) + 1}
                        for p, i, a, b, c, d, k in zip(pids, img_of, x, y, w, h, c1)],
        "categories": [{"id": k + 1, "name": c} for k, c in enumerate(classes)],
    }
    (ann / "coco_boxes.json").write_text(json.dumps(coco))
    # detections: per person 0-3 jittered copies (a quarter missed), the rest random boxes
    n_dets = round(dets_per_image * n_images)
    n_copy = min(n_dets, int(n_people * 1.5))
    src = rng.integers(0, n_people, n_copy)
    jit = rng.normal(0, 0.08, (n_copy, 4)) * np.stack([w[src], h[src], w[src], h[src]], 1)
    cb = np.stack([x[src], y[src], w[src], h[src]], 1) + jit
    cb[:, 2:] = np.maximum(cb[:, 2:], 1.0)
    n_rand = n_dets - n_copy
    rb = np.stack([rng.uniform(0, 1200, n_rand), rng.uniform(0, 1200, n_rand),
                   rng.uniform(10, 300, n_rand), rng.uniform(10, 300, n_rand)], 1)
    dimg = np.concatenate([img_of[src], rng.integers(1, n_images + 1, n_rand)])
    dbox = np.concatenate([cb, rb]).round(2)
    score = np.concatenate([rng.uniform(0.3, 1.0, n_copy), rng.uniform(0.0, 0.6, n_rand)]).round(3)
    dets = [{"image_id": int(i), "bbox": [float(v) for v in b], "score": float(s), "category_id": 1}
            for i, b, s in zip(dimg, dbox, score)]
    (root / "preds.json").write_text(json.dumps(dets))
    return root / "preds.json"


def _cocoeval(images, gts, dts):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cats = [{"id": 1, "name": "person"}]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": gts, "categories": cats}
        gt.createIndex()
        dt = COCO()
        dt.dataset = {"images": images, "annotations": dts, "categories": cats}
        dt.createIndex()
        ev = COCOeval(gt, dt, "bbox")
        ev.params.useCats = 0
        ev.params.imgIds = [im["id"] for im in images]
        ev.evaluate()
        ev.accumulate()
    return ev


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def coverage(reps: int, n_images: int, seed: int) -> None:
    """Print nominal, observed and Monte Carlo standard error of the interval coverages."""
    from facet_eval.disaggregate import rows_from_values
    from tests.test_facet_stats import TRUE_AR50, clustered_scene

    def pick(rows, metric, attribute, group):
        return next(r for r in rows if r["metric"] == metric and r["attribute"] == attribute and r["group"] == group)

    hits = {k: 0 for k in ("images: AR50", "images: gap MST 3-4", "images: gap masc-fem", "people: AR50",
                           "people: gap MST 3-4", "people: gap masc-fem")}
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    for r in range(reps):
        state = rng.bit_generator.state
        for unit, alone in (("images", False), ("people", True)):
            rng.bit_generator.state = state
            data, y = clustered_scene(rng, n_images=n_images, one_person_per_image=alone)
            rows = rows_from_values(data, {"AR50": y}, np.ones(len(y), bool), n_boot=1000, seed=r, per_class=False)
            ar, mst = pick(rows, "AR50", "all", "all"), pick(rows, "disparity_AR50", "skin_tone", "3-4")
            mf = pick(rows, "disparity_AR50", "gender_presentation", "masc-fem")
            hits[f"{unit}: AR50"] += ar["ci_low"] <= TRUE_AR50 <= ar["ci_high"]
            hits[f"{unit}: gap MST 3-4"] += mst["ci_low"] <= 0.0 <= mst["ci_high"]
            hits[f"{unit}: gap masc-fem"] += mf["ci_low"] <= 0.0 <= mf["ci_high"]
    print(f"coverage of nominal 95% intervals, {reps} scenes of {n_images} images x 4 people "
          f"({time.perf_counter() - t:.0f} s):")
    for name, k in hits.items():
        p = k / reps
        print(f"  {name:24s} observed {p:.3f}  MC s.e. {math.sqrt(p * (1 - p) / reps):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=31_702)
    ap.add_argument("--people", type=int, default=None, help="default: 49,551 scaled with --images")
    ap.add_argument("--dets", type=float, default=10.0, help="detections per image")
    ap.add_argument("--naive-sample", type=int, default=6, help="(class, group) cells timed for (c)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--coverage", type=int, default=0, metavar="R", help="run the coverage Monte Carlo instead")
    ap.add_argument("--coverage-images", type=int, default=200)
    args = ap.parse_args()
    if args.coverage:
        coverage(args.coverage, args.coverage_images, args.seed)
        return
    n_people = args.people or max(1, round(49_551 * args.images / 31_702))

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        pred_path = make_dataset(Path(tmp), args.images, n_people, args.dets, args.seed)
        t_make = time.perf_counter() - t
        t = time.perf_counter()
        data = load_facet(tmp)
        preds = load_predictions(pred_path, data)
        t_load = time.perf_counter() - t
    print(f"synthetic FACET: {len(data.images):,} images, {len(data.people):,} people, {len(data.classes)} classes, "
          f"{len(preds):,} detections (made in {t_make:.1f} s; load_facet + load_predictions {t_load:.1f} s)")

    # (a) ours
    t = time.perf_counter()
    rows = evaluate_detection(data, preds, intersections=[INTERSECT])
    t_a = time.perf_counter() - t
    peak_a = _peak_mb()
    n_cells = len({(r["class"], r["attribute"], r["group"]) for r in rows if not r["metric"].startswith("disparity")})
    print(f"(a) evaluate_detection: {t_a:.2f} s  ({len(rows):,} rows, {n_cells:,} (class, group) cells, "
          f"1000 image-bootstrap resamples shared by all)")

    # (b) one plain pycocotools bbox pass on the same data
    people = data.people
    images = [{"id": int(i)} for i in sorted(data.images["id"])]
    gts = [{"id": k + 1, "image_id": int(im), "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h),
            "iscrowd": 0, "category_id": 1}
           for k, (im, x, y, w, h) in enumerate(zip(people["image_id"], people["box_x"], people["box_y"],
                                                    people["box_w"], people["box_h"]))]
    dts = [{"id": k + 1, "image_id": d["image_id"], "bbox": d["bbox"], "area": d["bbox"][2] * d["bbox"][3],
            "score": d["score"], "iscrowd": 0, "category_id": 1} for k, d in enumerate(preds)]
    t = time.perf_counter()
    ev = _cocoeval(images, gts, dts)
    t_b = time.perf_counter() - t
    ours_all = next(r["value"] for r in rows if r["metric"] == "mAR" and r["attribute"] == "all" and r["class"] is None)
    coco_mar = float(ev.eval["recall"][:, 0, 0, -1].mean())
    print(f"(b) one pycocotools COCOeval bbox pass (evaluate + accumulate): {t_b:.2f} s  "
          f"(overall mAR ours {ours_all:.4f}, pycocotools {coco_mar:.4f})")

    # (c) naive: one COCOeval per (class, group) cell
    membership = group_membership(people)
    membership["&".join(INTERSECT)] = intersect(membership, *INTERSECT)
    n = len(people)
    class_masks = [(None, np.ones(n, dtype=bool))]
    cls_col = people["classes"]
    for c in data.classes:
        class_masks.append((c, np.array([c in cl for cl in cls_col], dtype=bool)))
    img_arr = people["image_id"].to_numpy()
    cells = []
    for cls, cm in class_masks:
        cells.append((cls, "all", "all", cm))
        for attr, gs in membership.items():
            cells.extend((cls, attr, g, cm & m) for g, m in gs.items())
    img_counts = np.array([len(np.unique(img_arr[m])) for *_, m in cells])
    dets_by_img: dict[int, list[dict]] = {}
    for d in dts:
        dets_by_img.setdefault(d["image_id"], []).append(d)
    rng = np.random.default_rng(args.seed)
    nonempty = np.flatnonzero(img_counts > 0)
    sample = rng.choice(nonempty, size=min(args.naive_sample, len(nonempty)), replace=False)
    t_sample, imgs_sample = 0.0, 0
    for ci in sample:
        m = cells[ci][3]
        cell_imgs = sorted({int(i) for i in img_arr[m]})
        sub_gts = [gts[k] for k in np.flatnonzero(m)]
        sub_dts = [d for i in cell_imgs for d in dets_by_img.get(i, [])]
        t = time.perf_counter()
        _cocoeval([{"id": i} for i in cell_imgs], sub_gts, sub_dts)
        t_sample += time.perf_counter() - t
        imgs_sample += len(cell_imgs)
    t_c = t_sample / max(imgs_sample, 1) * float(img_counts.sum())
    print(f"(c) naive, one COCOeval per cell: {len(sample)} of {len(cells):,} cells timed ({t_sample:.2f} s over "
          f"{imgs_sample:,} images), scaled to {int(img_counts.sum()):,} images: ~{t_c:.0f} s")

    print(f"ratio (a)/(b) = {t_a / t_b:.2f}   (c)/(a) = {t_c / t_a:.0f}x")
    print(f"peak resident memory: {peak_a:.0f} MB after (a), {_peak_mb():.0f} MB at the end "
          "(whole process, dataset generation included)")


if __name__ == "__main__":
    main()
