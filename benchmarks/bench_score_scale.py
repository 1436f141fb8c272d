"""`t2ibias score` at scale: the label join and the whole stage on synthetic runs of 10k / 100k / 1M images.

Builds a run directory from a template run (its spec, classifier and gate; default: a one-image
tiny-random-sd sweep made in a temporary folder), with N images over 2,000 prompts (``--prompts``;
the bank's occupations are 1,791), a manifest
(5 % blocked, 5 % failed) and a measurements table in which images have 0–2 faces, a whole-image
person label, and every classifier attribute. Then, in separate child processes (so peak RSS is
the stage's own), interleaved:

- ``join-old``: the per-image ``.loc`` loop the score stage used before (sizes ≤ 100k only);
- ``join-new``: :func:`t2ibias.metrics.score.image_labels` (merge/groupby);
- ``score``: the whole :func:`t2ibias.metrics.score.score_stage`;
- ``score-base`` (with ``--baseline DIR``, a checkout of an earlier version): the same stage run
  from that checkout just before, its four output files checked to be the same bytes.

Each child reports CPU seconds (user + system) and peak RSS (``resource.getrusage``). At sizes
where both joins run, their outputs are checked to be the same parquet bytes.

    OMP_NUM_THREADS=1 python benchmarks/bench_score_scale.py [--sizes 10000,100000,1000000] [--template RUN] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd



def old_image_labels(run):  # the loop this benchmark compares against, as it was
    from t2ibias.core.errors import UserError
    from t2ibias.core.vocab import PERSON_ATTRIBUTE
    from t2ibias.metrics.score import NO_PERSON
    from t2ibias.store.image_store import OK

    cspec = run.classifier
    person_gate = run.has_person_detector
    jobs = run.jobs
    records = run.store.records()
    missing = [j for j in jobs if j.key not in records]
    if missing:
        raise UserError("not generated")
    meas = run.measurements
    meas = meas[meas["measurer"] == run.measurer]
    axes = [a for a in cspec.attributes if a != PERSON_ATTRIBUTE]
    faces = meas[(meas["unit"] == "face") & (meas["face_index"] == 0)].set_index(["key", "attribute"])
    people = meas[(meas["unit"] == "person") & (meas["face_index"] == 0)].set_index(["key", "attribute"])
    whole = meas[meas["unit"] == "image"].set_index(["key", "attribute"])
    n_faces = meas[(meas["unit"] == "face")].groupby("key")["face_index"].nunique()
    n_people = meas[(meas["unit"] == "person")].groupby("key")["face_index"].nunique()
    rows = []
    for job in jobs:
        status = records[job.key]["status"]
        base = {"key": job.key, "prompt_id": job.prompt_id, "image_index": job.index}
        nf, npeople = int(n_faces.get(job.key, 0)), int(n_people.get(job.key, 0))
        if status != OK:
            for axis in axes:
                rows.append({**base, "attribute": axis, "label": status, "score": math.nan, "person_source": "none",
                             "n_faces": 0, "n_people": 0})
            continue
        if nf > 0:
            source, table = "face", faces
        elif npeople > 0:
            source, table = "person", people
        elif not person_gate and whole.loc[(job.key, PERSON_ATTRIBUTE), "label"] == PERSON_ATTRIBUTE:
            source, table = "clip", whole
        else:
            source, table = "none", None
        for axis in axes:
            if table is None:
                label, score = NO_PERSON, math.nan
            else:
                hit = table.loc[(job.key, axis)]
                label, score = hit["label"], float(hit["score"])
            rows.append({**base, "attribute": axis, "label": label, "score": score, "person_source": source,
                         "n_faces": nf, "n_people": npeople})
    return pd.DataFrame(rows)


#: What the score stage writes, compared byte for byte against ``--baseline``.
SCORE_OUTPUTS = ("metrics.json", "metrics.csv", "image_labels.parquet", "instrument.json")


def make_template(folder: Path) -> Path:
    run = folder / "template"
    subprocess.run([sys.executable, "-m", "t2ibias.cli", "sweep", "--model", "tiny-random-sd", "--prompts", "demo",
                    "--limit", "1", "--seeds", "1", "--device", "cpu", "--out", str(run)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return run


def make_run(template: Path, n: int, folder: Path, n_prompts: int = 2000) -> Path:
    """A synthetic run of ``n`` images over ``n_prompts`` prompts with the template's spec and measurer."""
    from t2ibias.core.vocab import PERSON_ATTRIBUTE
    from t2ibias.store.rundir import RunDir

    run = folder / f"run{n}"
    run.mkdir()
    for name in ("spec.json", "measure.json", "measurers.json"):
        shutil.copy(template / name, run / name)
    spec = json.loads((template / "spec.json").read_text())
    spec.update(n_seeds=n // n_prompts, limit=None)
    (run / "spec.json").write_text(json.dumps(spec))
    row = pd.read_parquet(template / "prompts.parquet").iloc[0]
    subjects = [f"occupation{i % 40}" for i in range(n_prompts)]
    prompts = pd.DataFrame({c: [row[c]] * n_prompts for c in row.index})
    prompts["prompt_id"] = [f"p{i:07d}" for i in range(n_prompts)]
    prompts["subject"] = subjects
    prompts["template_id"] = [f"t{i % 3}" for i in range(n_prompts)]
    prompts["text"] = [f"a photo of {s} number {i}" for i, s in enumerate(subjects)]
    prompts.to_parquet(run / "prompts.parquet", index=False)
    r = RunDir(run)
    jobs = r.jobs
    rng = np.random.default_rng(0)
    status = rng.choice(["ok", "blocked", "failed"], size=n, p=[0.9, 0.05, 0.05])
    with open(run / "manifest.jsonl", "w") as fh:
        for j, st in zip(jobs, status):
            fh.write(json.dumps({"key": j.key, "prompt_id": j.prompt_id, "image_index": j.index, "status": str(st),
                                 "path": f"images/{j.key[:2]}/{j.key}.png", "sha256": "0" * 64}, sort_keys=True) + "\n")
    cspec = r.classifier
    measurer = r.measurer
    keys = np.array([j.key for j, st in zip(jobs, status) if st == "ok"], dtype=object)
    m = len(keys)
    n_face = rng.choice([0, 1, 2], size=m, p=[0.5, 0.4, 0.1])
    says_person = rng.random(m) < 0.6
    parts = []
    for attr, a in cspec.attributes.items():
        labels = np.array(list(a.labels), dtype=object)
        if attr == PERSON_ATTRIBUTE:
            img_label = np.where(says_person, PERSON_ATTRIBUTE, labels[labels != PERSON_ATTRIBUTE][0])
        else:
            img_label = labels[rng.integers(0, len(labels), m)]
        parts.append(pd.DataFrame({"key": keys, "unit": "image", "face_index": 0, "attribute": attr,
                                   "label": img_label, "score": rng.random(m)}))
        if attr == PERSON_ATTRIBUTE:
            continue
        for fi in (0, 1):
            sel = n_face > fi
            parts.append(pd.DataFrame({"key": keys[sel], "unit": "face", "face_index": fi, "attribute": attr,
                                       "label": labels[rng.integers(0, len(labels), int(sel.sum()))],
                                       "score": rng.random(int(sel.sum()))}))
    meas = pd.concat(parts, ignore_index=True)
    meas.insert(1, "measurer", measurer)
    for c in ("box_x", "box_y", "box_w", "box_h", "margin"):
        meas[c] = 0.0
    meas["top_label"] = meas["label"]
    meas["probs"] = "{}"
    meas.to_parquet(run / "measurements.parquet", index=False)
    return run


def child(what: str, run: str) -> None:
    from t2ibias.metrics.score import image_labels, score_stage
    from t2ibias.store.rundir import RunDir

    t0 = time.process_time()
    if what in ("score", "score-base"):
        score_stage(Path(run))
        import hashlib
        digest = hashlib.sha256(b"".join((Path(run) / f).read_bytes() for f in SCORE_OUTPUTS)).hexdigest()
    else:
        labels = (old_image_labels if what == "join-old" else image_labels)(RunDir(Path(run)))
        buf = io.BytesIO()
        labels.to_parquet(buf, index=False)
        import hashlib
        digest = hashlib.sha256(buf.getvalue()).hexdigest()
    cpu = time.process_time() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"cpu_s": cpu, "peak_rss_mb": peak_mb, "digest": digest}))


def run_child(what: str, run: Path, baseline: Path | None = None) -> dict:
    env = dict(os.environ)
    if what == "score-base":  # the whole stage as an earlier checkout of the project has it
        env["PYTHONPATH"] = str(baseline)
    out = subprocess.run([sys.executable, __file__, "--child", what, str(run)], check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--old-max", type=int, default=100_000, help="largest size the old loop runs at")
    ap.add_argument("--template", type=Path, help="a finished tiny run to copy spec and measurer from")
    ap.add_argument("--baseline", type=Path, help="an earlier checkout of the project: its score stage runs too, outputs compared")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="bench_score_scale_") as tmp:
        folder = Path(tmp)
        template = args.template or make_template(folder)
        print(f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; {os.cpu_count()} CPUs; child processes, CPU = user + system")
        print(f"{'images':>9} {'what':>10} {'CPU s':>8} {'peak RSS MB':>12}   ratio old/new")
        for n in [int(s) for s in args.sizes.split(",")]:
            run = make_run(template, n, folder, args.prompts)
            order = ["join-old", "join-new"] if n <= args.old_max else ["join-new"]
            order += ["score-base", "score"] if args.baseline else ["score"]
            got = {w: run_child(w, run, args.baseline) for w in order}
            for w in order:
                g = got[w]
                ratio = ""
                if w == "join-new" and "join-old" in got:
                    ratio = f"   CPU {got['join-old']['cpu_s'] / g['cpu_s']:.1f}x, RSS {got['join-old']['peak_rss_mb'] / g['peak_rss_mb']:.1f}x"
                    assert got["join-old"]["digest"] == g["digest"], "old and new label tables differ"
                    ratio += ", same parquet bytes"
                if w == "score" and "score-base" in got:
                    b = got["score-base"]
                    ratio = f"   CPU {b['cpu_s'] / g['cpu_s']:.1f}x, RSS {b['peak_rss_mb'] / g['peak_rss_mb']:.1f}x"
                    assert b["digest"] == g["digest"], "baseline and current score outputs differ"
                    ratio += ", same output bytes"
                print(f"{n:>9,} {w:>10} {g['cpu_s']:>8.1f} {g['peak_rss_mb']:>12.0f}{ratio}", flush=True)
            shutil.rmtree(run)


if __name__ == "__main__":
    main()
