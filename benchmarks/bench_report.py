"""The report stage at scale: 2,000 prompts × 50 images → report.html size and Chromium load time.

A synthetic run directory is written directly: tiny PNGs in the image store's layout, a manifest,
``image_labels.parquet`` over five attributes and a ``metrics.json`` whose rows have the shape the
score stage writes (every row of one prompt, family, subject, template and the whole run of a scored
template run is repeated for each synthetic prompt and group, values jittered). Then:

- ``write_report`` timed cold (no ``thumbs/``: every shown thumbnail is made) and warm (reused),
  interleaved, with the warm/cold ratio;
- the page size, against the 5 MB target;
- the load time in headless chromium (``goto`` until ``load``, median of 5), against 2 s, and the
  page width at a 390 px viewport.

    OMP_NUM_THREADS=1 python benchmarks/bench_report.py [--prompts 2000] [--images 50] [--template RUN]

``--template`` is any scored run (``t2ibias sweep --model tiny-random-sd --prompts demo --out RUN``);
without it a small one is built from the report tests' fixture.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]
FAMILIES = ("occupation", "trait", "situation", "object")


def build(template: Path, out: Path, n_prompts: int, n_images: int) -> Path:
    rng = random.Random(0)
    spec = json.loads((template / "spec.json").read_text())
    spec["n_seeds"] = n_images
    spec.pop("limit", None)
    out.mkdir(parents=True)
    (out / "spec.json").write_text(json.dumps(spec))
    for name in ("measure.json", "measurers.json"):
        if (template / name).is_file():
            shutil.copy(template / name, out / name)
    tprompts = pd.read_parquet(template / "prompts.parquet")
    prompts = []
    for i in range(n_prompts):
        fam = FAMILIES[i % len(FAMILIES)]
        row = tprompts.iloc[i % len(tprompts)].to_dict()
        row.update(prompt_id=f"p{i:05d}", family=fam, subject=f"{fam}-{(i // len(FAMILIES)) % 125:03d}",
                   template_id=f"t{i % 4}", intervention="none" if i % 8 < 6 else "diverse",
                   text=f"a photo of a {fam} number {i}, synthetic prompt for the scale benchmark")
        prompts.append(row)
    prompts = pd.DataFrame(prompts)
    prompts.to_parquet(out / "prompts.parquet")

    labels_t = pd.read_parquet(template / "image_labels.parquet")
    attrs = list(dict.fromkeys(labels_t["attribute"]))
    choices = {a: sorted(set(labels_t.loc[labels_t["attribute"] == a, "label"])) for a in attrs}
    lines, labels = [], []
    for i, pid in enumerate(prompts["prompt_id"]):
        for j in range(n_images):
            key = f"{i:05d}{j:03d}" + "0" * 24
            rel = f"images/{key[:2]}/{key}.png"
            path = out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (64, 64), (i % 256, j * 5 % 256, 128)).save(path, compress_level=1)
            lines.append(json.dumps({"key": key, "prompt_id": pid, "image_index": j, "seed": j, "status": "ok",
                                     "path": rel, "width": 64, "height": 64}))
            for a in attrs:
                labels.append((key, pid, j, a, rng.choice(choices[a]), 0.9, "face", 1, 1))
    (out / "manifest-000.jsonl").write_text("\n".join(lines) + "\n")
    pd.DataFrame(labels, columns=["key", "prompt_id", "image_index", "attribute", "label", "score", "person_source",
                                  "n_faces", "n_people"]).to_parquet(out / "image_labels.parquet")

    metrics = json.loads((template / "metrics.json").read_text())
    by = {}
    for r in metrics["rows"]:
        by.setdefault(r["group_by"], {}).setdefault(str(r["group"]), []).append(r)
    groups = {"prompt_id": list(prompts["prompt_id"]), "family": list(FAMILIES),
              "subject": sorted(set(prompts["subject"])), "template_id": sorted(set(prompts["template_id"])),
              "intervention": ["none", "diverse"], "intervention_vs_none": ["diverse"]}
    rows = list(by.get("all", {}).get("all", []))
    for gb, names in groups.items():
        templates = list(by.get(gb, {}).values()) or list(by["prompt_id"].values())
        for k, name in enumerate(names):
            for r in templates[k % len(templates)]:
                r = copy.copy(r)
                r.update(group_by=gb, group=name)
                if isinstance(r.get("value"), (int, float)) and r.get("metric") != "count":
                    shift = rng.uniform(-0.1, 0.1)
                    for f in ("value", "ci_low", "ci_high"):
                        if isinstance(r.get(f), (int, float)):
                            r[f] = r[f] + shift
                rows.append(r)
    metrics["rows"] = rows
    (out / "metrics.json").write_text(json.dumps(metrics))
    return out


def photos(run: Path, n_prompts: int, per_prompt: int = 8) -> int:
    """Overwrite the first ``per_prompt`` images of the first ``n_prompts`` prompts with 128×128 crops
    of a photograph (``skimage.data.astronaut``), so the thumbnails the report embeds weigh what real
    images' do (a flat tiny PNG thumbnails to well under 1 kB). The report decodes no other image."""
    from skimage import data

    photo = Image.fromarray(data.astronaut())
    rng = random.Random(1)
    done = 0
    for line in (run / "manifest-000.jsonl").read_text().splitlines():
        rec = json.loads(line)
        i = int(rec["prompt_id"][1:])
        if i < n_prompts and rec["image_index"] < per_prompt:
            x, y = rng.randrange(0, 384), rng.randrange(0, 384)
            photo.crop((x, y, x + 128, y + 128)).save(run / rec["path"])
            done += 1
    return done


def _template(tmp: Path) -> Path:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.test_report import make_run

    return make_run(tmp)


def load_times(page_file: Path, repeats: int) -> tuple[list[float], int, int]:
    from playwright.sync_api import sync_playwright

    url = page_file.resolve().as_uri()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        times = []
        for _ in range(repeats):
            page = b.new_page(viewport={"width": 1280, "height": 900})
            t = time.perf_counter()
            page.goto(url, wait_until="load", timeout=120_000)
            times.append(time.perf_counter() - t)
            dom = page.evaluate("document.getElementsByTagName('*').length")
            page.close()
        page = b.new_page(viewport={"width": 390, "height": 900})
        page.goto(url, wait_until="load", timeout=120_000)
        width = page.evaluate("document.documentElement.scrollWidth")
        b.close()
    return times, dom, width


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--template", type=Path, default=None, help="a scored run whose row shapes are repeated")
    ap.add_argument("--photos", type=int, default=200,
                    help="prompts whose first 8 images are photo crops (covers every image the report shows)")
    ap.add_argument("--keep", type=Path, default=None, help="write the synthetic run here and keep it (reused when it exists)")
    args = ap.parse_args()

    from t2ibias.report.html import write_report
    from t2ibias.store.rundir import THUMBS_DIR

    tmp = Path(tempfile.mkdtemp(prefix="bench_report_"))
    try:
        template = args.template or _template(tmp / "template")
        run = args.keep or tmp / "run"
        if (run / "spec.json").is_file():  # a --keep folder from an earlier call: measure it again
            print(f"synthetic run: reusing {run}")
        else:
            t = time.perf_counter()
            build(template, run, args.prompts, args.images)
            print(f"synthetic run: {args.prompts} prompts × {args.images} images written in {time.perf_counter() - t:.1f} s")
        print(f"photo crops: {photos(run, args.photos)} images")
        cold, warm = [], []
        for _ in range(2):  # interleaved: cold (no thumbnails cached), then warm (all reused)
            shutil.rmtree(run / THUMBS_DIR, ignore_errors=True)
            t = time.perf_counter()
            page = write_report(run)
            cold.append(time.perf_counter() - t)
            t = time.perf_counter()
            write_report(run)
            warm.append(time.perf_counter() - t)
        size = page.stat().st_size
        n_thumbs = len(list((run / THUMBS_DIR).iterdir()))
        print(f"report: cold {statistics.median(cold):.1f} s, warm {statistics.median(warm):.1f} s "
              f"(warm/cold {statistics.median(warm) / statistics.median(cold):.2f}); {n_thumbs} thumbnails cached")
        print(f"report.html: {size / 1e6:.2f} MB (target < 5 MB: {size / 5e6:.2f} of it)")
        if Path("/usr/bin/chromium").is_file():
            times, dom, width = load_times(page, 5)
            med = statistics.median(times)
            print(f"chromium load: median {med:.2f} s of {[round(x, 2) for x in times]} "
                  f"(target < 2 s: {med / 2:.2f} of it); {dom} DOM elements; width at 390 px viewport: {width} px")
        else:
            print("chromium load: skipped (no /usr/bin/chromium)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
