"""Monte Carlo coverage of every interval the score stage writes, through ``compute_metrics`` itself.

Each case draws label counts from known shares, builds the image-labels and prompts tables the score
stage reads (as benchmarks/bench_score.py does), calls :func:`t2ibias.metrics.score.compute_metrics`
and checks row by row whether [ci_low, ci_high] holds the true value. One call holds many
replicates: a replicate of a per-prompt case is one prompt, of an aggregate case one group of prompts
(one value of the ``subject`` column), of a paired case one family of matched prompt pairs.

True values: a prompt's statistic at its true shares; for ``mean_over_prompts`` the mean over the
group's prompts of their true per-prompt values; for ``pooled`` the statistic at the image-weighted
mean of the true shares; for paired rows the mean over pairs of the true difference. Aggregate shares
are also checked against the share of the prompt population the prompts are drawn from (a Beta).

Output: markdown tables (nominal 95 %, observed coverage, its Monte Carlo standard error
sqrt(c(1 − c)/R), replicates R, mean width). "valid" says whether the interval method claims
coverage there; ``n = 4`` (the sweep's default seeds) is flagged; "LOW" marks observed coverage
below 93 % by more than two standard errors.

    python benchmarks/bench_coverage.py [--quick] [--replicates R] [--seed S] [--sections share skew ...]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported: one thread, timings comparable between runs

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

CLASSIFIER = "clip-vit-l-14-openai"  # its attributes give K = 2, 4 and 7 labels
AXES = {2: "gender_presentation", 4: "race4", 7: "race"}
NOMINAL = 0.95
TARGET = 0.93
REF_TABLE = "bls_cpsaat11_2025"
REF_KEY = "Chief executives"  # women 33.0 %
NS = (4, 10, 25, 50, 100)
SKEW_NAMES = ("total_variation_uniform", "normalized_entropy", "max_min_gap", "dalleval_mad", "dalleval_std", "openbias_bias")
REFERENCE_NAMES = ("total_variation_reference", "js_divergence_reference")
#: Interval methods that claim coverage at the nominal level (Wilson and Jeffreys are offered for comparison).
CLAIMING = ("clopper-pearson", "korn-graubard", "simultaneous-projection", "mean of per-prompt bounds", "paired t", "t")


def claims_validity(method: str) -> bool:
    return method in CLAIMING or method.startswith(tuple(m + " " for m in CLAIMING))
EPS = 1e-9


def truth_functions() -> dict[str, Callable[..., np.ndarray]]:
    """metric name -> f(shares (..., K)) -> (...), the definitions the score stage uses."""
    from t2ibias.metrics import legacy
    from t2ibias.metrics.skew import max_min_gap, normalized_entropy, total_variation_uniform

    return {"total_variation_uniform": total_variation_uniform, "normalized_entropy": normalized_entropy,
            "max_min_gap": max_min_gap, "dalleval_mad": legacy.mad, "dalleval_std": legacy.std,
            "openbias_bias": legacy.openbias_bias}


@dataclass
class Sim:
    """Prompts (each with its label counts) and the true value of each row they should produce."""

    axis: str
    labels: list[str]
    counts: list[np.ndarray] = field(default_factory=list)
    columns: list[dict[str, Any]] = field(default_factory=list)
    truth: list[dict[str, Any]] = field(default_factory=list)

    def add_prompts(self, counts: np.ndarray, **columns: Any) -> list[str]:
        """Prompts with counts (M, K); each column value is a scalar or a list of M values."""
        first = len(self.counts)
        pids = [f"p{first + i}" for i in range(len(counts))]
        for i, row in enumerate(counts):
            self.counts.append(np.asarray(row, dtype=np.int64))
            self.columns.append({"prompt_id": pids[i], **{k: (v[i] if isinstance(v, (list, np.ndarray)) else v) for k, v in columns.items()}})
        return pids

    def expect(self, case: int, group_by: str, groups: list[str], metric: str, label: str, aggregate: str,
               values: np.ndarray, target: str = "these prompts") -> None:
        for g, v in zip(groups, np.asarray(values, dtype=float)):
            self.truth.append({"case": case, "group_by": group_by, "group": g, "metric": metric, "label": label,
                               "aggregate": aggregate, "truth": float(v), "target": target})

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The image-labels table (one row per image) and the prompts table."""
        counts = np.stack(self.counts)
        sizes = counts.sum(axis=1)
        pids = [c["prompt_id"] for c in self.columns]
        label = np.repeat(np.tile(np.asarray(self.labels, dtype=object), len(counts)), counts.ravel())
        starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
        labels = pd.DataFrame({"key": np.arange(sizes.sum()).astype(str), "prompt_id": np.repeat(pids, sizes),
                               "image_index": np.arange(sizes.sum()) - starts, "attribute": self.axis, "label": label})
        # no family column unless a case sets one: its group (and "all") would repeat every prompt's work
        return labels, pd.DataFrame(self.columns)


@dataclass
class Case:
    section: str
    description: str
    k: int
    n: str
    prompts: int = 1


def score_rows(sim: Sim, ci_method: str = "clopper-pearson") -> pd.DataFrame:
    from t2ibias.metrics.score import compute_metrics

    labels, prompts = sim.frames()
    rows = compute_metrics(labels, prompts, {"classifier": {"id": CLASSIFIER}, "base_seed": 0}, ci_method)
    df = pd.DataFrame(rows)
    df["label"] = df["label"].fillna("")
    return df


def coverage(rows: pd.DataFrame, sim: Sim) -> pd.DataFrame:
    """One line per (case, metric, label, aggregate, method, target): coverage, its MC error, width."""
    truth = pd.DataFrame(sim.truth)
    keys = ["group_by", "group", "metric", "label", "aggregate"]
    merged = truth.merge(rows[keys + ["ci_low", "ci_high", "method", "p_value"]], on=keys, how="left")
    missing = merged["method"].isna()
    if missing.any():
        first = merged[missing].iloc[0]
        raise SystemExit(f"no row {dict(first[keys])} in compute_metrics' output: the row contract changed")
    lo, hi = merged["ci_low"].astype(float), merged["ci_high"].astype(float)
    merged["covered"] = ((lo <= merged["truth"] + EPS) & (merged["truth"] <= hi + EPS)).astype(float)
    merged["width"] = hi - lo
    merged["no_interval"] = (~np.isfinite(lo) | ~np.isfinite(hi)).astype(float)
    merged["rejected"] = (merged["p_value"].astype(float) < 0.05).astype(float)
    out = merged.groupby(["case", "metric", "label", "aggregate", "method", "target"], sort=False).agg(
        R=("covered", "size"), observed=("covered", "mean"), width=("width", "mean"), no_interval=("no_interval", "sum"),
        true_mean=("truth", "mean"), rejected=("rejected", "mean"), tested=("p_value", lambda s: int(np.isfinite(s.astype(float)).sum())))
    return out.reset_index()


# --- the cases -----------------------------------------------------------------------------------


def tilted(k: int, tv: float) -> np.ndarray:
    """Shares with total variation ``tv`` to uniform: label 0 gains tv, the rest share the loss."""
    p = np.full(k, 1.0 / k)
    p[0] += tv
    p[1:] -= tv / (k - 1)
    return p


def share_cases(rng: np.random.Generator, reps: int, cases: dict[int, Case]) -> tuple[Sim, list[str]]:
    """One prompt's share of a label, n images, p in {0.5, 0.8, 0.95}; every share method."""
    sim = Sim(AXES[2], ["masc", "fem"])
    for n in NS:
        for p in (0.5, 0.8, 0.95):
            case = len(cases)
            cases[case] = Case("share", f"share p = {p}", 2, str(n))
            masc = rng.binomial(n, p, size=reps)
            pids = sim.add_prompts(np.stack([masc, n - masc], axis=1))
            sim.expect(case, "prompt_id", pids, "proportion", "masc", "prompt", np.full(reps, p))
    return sim, ["clopper-pearson", "wilson", "jeffreys"]


def skew_cases(rng: np.random.Generator, reps: int, cases: dict[int, Case], k: int) -> Sim:
    """Per-prompt skew statistics at exact balance, near it (TV = 0.05), far (TV = 0.4), one label only."""
    from t2ibias.models.classifier_spec import resolve_classifier_spec

    labels = list(resolve_classifier_spec(CLASSIFIER).attributes[AXES[k]].labels)
    sim = Sim(AXES[k], labels)
    fns = truth_functions()
    regimes = {"exact balance": np.full(k, 1.0 / k), "near balance (TV 0.05)": tilted(k, 0.05),
               "far (TV 0.4)": tilted(k, 0.4), "one label only": np.eye(k)[0]}
    for n in NS:
        for name, p in regimes.items():
            case = len(cases)
            cases[case] = Case("skew", name, k, str(n))
            pids = sim.add_prompts(rng.multinomial(n, p, size=reps))
            for metric in SKEW_NAMES:
                sim.expect(case, "prompt_id", pids, metric, "", "prompt", np.full(reps, float(fns[metric](p))))
    return sim


def aggregate_cases(rng: np.random.Generator, reps: int, cases: dict[int, Case], quick: bool) -> Sim:
    """Groups of P prompts whose shares differ (a Beta over prompts), or all balanced: mean over
    prompts and pooled, shares and skew statistics (K = 2)."""
    sim = Sim(AXES[2], ["masc", "fem"])
    fns = truth_functions()
    modes = {"all prompts balanced": None, "Beta mean 0.5": 0.5, "Beta mean 0.8": 0.8, "Beta mean 0.95": 0.95}
    sizes: list[Any] = [4, 25, "2-30"]
    concentration = 8.0
    for prompts in (5, 20, 100):
        for n in sizes:
            if n == "2-30" and prompts != 20:
                continue
            for name, mean in modes.items():
                if quick and prompts == 100 and n == 25 and mean is None:
                    continue
                case = len(cases)
                cases[case] = Case("aggregate", name + (f", concentration {concentration:g}" if mean else ""), 2, str(n), prompts)
                if mean is None:
                    p = np.full((reps, prompts), 0.5)
                else:
                    p = rng.beta(mean * concentration, (1 - mean) * concentration, size=(reps, prompts))
                size = np.full((reps, prompts), n) if isinstance(n, int) else rng.integers(2, 31, size=(reps, prompts))
                masc = rng.binomial(size, p)
                groups = [f"c{case}r{r}" for r in range(reps)]
                sim.add_prompts(np.stack([masc.ravel(), (size - masc).ravel()], axis=1), subject=list(np.repeat(groups, prompts)))
                shares = np.stack([p, 1 - p], axis=-1)  # (R, P, 2)
                weighted = (shares * size[..., None]).sum(axis=1) / size.sum(axis=1)[:, None]
                sim.expect(case, "subject", groups, "proportion", "masc", "mean_over_prompts", p.mean(axis=1))
                sim.expect(case, "subject", groups, "proportion", "masc", "pooled", weighted[:, 0])
                if mean is not None:
                    sim.expect(case, "subject", groups, "proportion", "masc", "mean_over_prompts", np.full(reps, mean), "prompt population")
                    sim.expect(case, "subject", groups, "proportion", "masc", "pooled", np.full(reps, mean), "prompt population")
                for metric in SKEW_NAMES:
                    sim.expect(case, "subject", groups, metric, "", "mean_over_prompts", fns[metric](shares).mean(axis=1))
                    sim.expect(case, "subject", groups, metric, "", "pooled", fns[metric](weighted))
    return sim


def aggregate_cases_k4(rng: np.random.Generator, reps: int, cases: dict[int, Case]) -> Sim:
    """Groups of P prompts over four labels: all balanced, or shares from a Dirichlet over prompts."""
    from t2ibias.models.classifier_spec import resolve_classifier_spec

    labels = list(resolve_classifier_spec(CLASSIFIER).attributes[AXES[4]].labels)
    sim = Sim(AXES[4], labels)
    fns = truth_functions()
    n = 10
    for prompts in (5, 20, 100):
        for name, alpha in (("all prompts balanced", None), ("Dirichlet 8·(0.4, 0.3, 0.2, 0.1)", 8 * np.array([0.4, 0.3, 0.2, 0.1]))):
            case = len(cases)
            cases[case] = Case("aggregate", name, 4, str(n), prompts)
            shares = np.full((reps, prompts, 4), 0.25) if alpha is None else rng.dirichlet(alpha, size=(reps, prompts))
            counts = rng.multinomial(n, shares.reshape(-1, 4))
            groups = [f"c{case}r{r}" for r in range(reps)]
            sim.add_prompts(counts, subject=list(np.repeat(groups, prompts)))
            sim.expect(case, "subject", groups, "proportion", labels[0], "mean_over_prompts", shares[..., 0].mean(axis=1))
            sim.expect(case, "subject", groups, "proportion", labels[0], "pooled", shares[..., 0].mean(axis=1))
            for metric in SKEW_NAMES:
                sim.expect(case, "subject", groups, metric, "", "mean_over_prompts", fns[metric](shares).mean(axis=1))
                sim.expect(case, "subject", groups, metric, "", "pooled", fns[metric](shares.mean(axis=1)))
    return sim


def reference_cases(rng: np.random.Generator, reps: int, cases: dict[int, Case], agg_reps: int) -> list[Sim]:
    """Distance to a reference (labour statistics), per prompt and as a mean over prompts."""
    from t2ibias.metrics.skew import js_divergence, total_variation
    from t2ibias.prompts.references import reference_distribution

    fem = reference_distribution(REF_TABLE, REF_KEY)["gender"]["fem"]
    ref = np.array([1 - fem, fem])
    per_prompt, grouped = Sim(AXES[2], ["masc", "fem"]), Sim(AXES[2], ["masc", "fem"])
    cols = {"reference_table": REF_TABLE, "reference": REF_KEY}

    def expect_all(sim: Sim, case: int, group_by: str, groups: list[str], aggregate: str, shares: np.ndarray) -> None:
        """shares (R, 2) per prompt, or (R, P, 2) averaged over P prompts."""
        per = {"total_variation_reference": total_variation(shares, ref), "js_divergence_reference": js_divergence(shares, ref),
               "share_minus_reference": shares[..., 1] - ref[1]}
        for metric, v in per.items():
            v = v if v.ndim == 1 else v.mean(axis=1)
            sim.expect(case, group_by, groups, metric, "fem" if metric == "share_minus_reference" else "", aggregate, v)

    regimes = {"matches the reference": ref, "near (TV 0.05)": ref + np.array([0.05, -0.05]), "far (p = 0.95)": np.array([0.95, 0.05])}
    for n in NS:
        for name, p in regimes.items():
            case = len(cases)
            cases[case] = Case("reference", f"{name}; reference {REF_KEY} (women {fem:.3f})", 2, str(n))
            masc = rng.binomial(n, p[0], size=reps)
            pids = per_prompt.add_prompts(np.stack([masc, n - masc], axis=1), **cols)
            expect_all(per_prompt, case, "prompt_id", pids, "prompt", np.tile(p, (reps, 1)))
    n = 10
    for prompts in (5, 20):
        for name, conc in (("every prompt matches", None), ("Beta around the reference, concentration 8", 8.0)):
            case = len(cases)
            cases[case] = Case("reference", f"{name}; reference {REF_KEY}", 2, str(n), prompts)
            p = np.full((agg_reps, prompts), ref[0]) if conc is None else rng.beta(ref[0] * conc, ref[1] * conc, size=(agg_reps, prompts))
            masc = rng.binomial(n, p)
            groups = [f"c{case}r{r}" for r in range(agg_reps)]
            grouped.add_prompts(np.stack([masc.ravel(), n - masc.ravel()], axis=1), subject=list(np.repeat(groups, prompts)), **cols)
            expect_all(grouped, case, "subject", groups, "mean_over_prompts", np.stack([p, 1 - p], axis=-1))
    return [per_prompt, grouped]


def paired_cases(rng: np.random.Generator, reps: int, cases: dict[int, Case]) -> list[Sim]:
    """An intervention against ``none`` on matched prompts: no effect, or one that balances
    stereotyped prompts. Replicates are families; a few per call (pairing is per intervention name)."""
    fns = truth_functions()
    sims = []
    n = 10
    specs = []
    for prompts in (5, 20, 100):
        for name in ("no effect (Beta mean 0.8 both arms)", "balances every prompt (Beta mean 0.8 → 0.5)"):
            case = len(cases)
            cases[case] = Case("paired", name, 2, str(n), prompts)
            specs.append((case, prompts, name.startswith("balances")))
    per_call = 10
    for case, prompts, balances in specs:
        for start in range(0, reps, per_call):
            sim = Sim(AXES[2], ["masc", "fem"])
            for r in range(start, min(start + per_call, reps)):
                family, iv = f"c{case}r{r}", f"iv{r}"
                p_none = rng.beta(0.8 * 8, 0.2 * 8, size=prompts)
                p_iv = np.full(prompts, 0.5) if balances else p_none
                for arm, p in (("none", p_none), (iv, p_iv)):
                    masc = rng.binomial(n, p)
                    sim.add_prompts(np.stack([masc, n - masc], axis=1), family=family, intervention=arm,
                                    place=[f"j{j}" for j in range(prompts)])
                sim.expect(case, "intervention_vs_none", [iv], "proportion", "masc", "mean_over_prompts", [np.mean(p_iv - p_none)])
                for metric in SKEW_NAMES:
                    s_none, s_iv = (fns[metric](np.stack([q, 1 - q], axis=-1)) for q in (p_none, p_iv))
                    sim.expect(case, "intervention_vs_none", [iv], metric, "", "mean_over_prompts", [np.mean(s_iv - s_none)])
            sims.append(sim)
    return sims


# --- the tables ---------------------------------------------------------------------------------


def fmt(x: float, digits: int = 3) -> str:
    return "—" if not np.isfinite(x) else f"{x:.{digits}f}"


def table(result: pd.DataFrame, cases: dict[int, Case]) -> tuple[str, list[str]]:
    head = ("| section | case | K | n | P | metric | label | aggregate | method | target | valid | flag | R | nominal "
            "| observed | MC se | mean width | status |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    findings: dict[tuple, list[str]] = {}
    for _, r in result.iterrows():
        c = cases[int(r["case"])]
        se = math.sqrt(r["observed"] * (1 - r["observed"]) / r["R"])
        valid = "yes" if claims_validity(str(r["method"])) else "no (comparison)"
        flag = "n = 4" if c.n == "4" else ""
        low = r["observed"] + 2 * se < TARGET
        status = ("LOW" if low else "ok") + (f", {int(r['no_interval'])} without interval" if r["no_interval"] else "")
        lines.append(f"| {c.section} | {c.description} | {c.k} | {c.n} | {c.prompts} | {r['metric']} | {r['label']} | {r['aggregate']} "
                     f"| {r['method']} | {r['target']} | {valid} | {flag} | {int(r['R'])} | {NOMINAL:.2f} | {r['observed']:.3f} "
                     f"| {se:.3f} | {fmt(r['width'])} | {status} |")
        if low and valid == "yes":
            where = (f"{c.section}: {c.description}, K = {c.k}, n = {c.n}, P = {c.prompts} — {r['aggregate']}, {r['method']}, "
                     f"target {r['target']}: {r['observed']:.3f} ± {se:.3f}")
            findings.setdefault((where,), []).append(str(r["metric"]))
    return "\n".join(lines), [f"{key[0]} ({', '.join(metrics)})" for key, metrics in findings.items()]


def balance_tests(result: pd.DataFrame, cases: dict[int, Case]) -> str:
    """Size of the tests in the rows where H0 holds (exact balance; a prompt matching its reference)."""
    lines = ["| test | K | n | P | aggregate | R | P(p < 0.05) | MC se |", "|---|---|---|---|---|---|---|---|"]
    null_cases = {i for i, c in cases.items() if c.description.startswith(("exact balance", "matches the reference", "all prompts balanced", "every prompt matches"))}
    metric_of = {"skew": "total_variation_uniform", "aggregate": "total_variation_uniform", "reference": "total_variation_reference"}
    for _, r in result.iterrows():
        c = cases[int(r["case"])]
        if int(r["case"]) not in null_cases or r["metric"] != metric_of.get(c.section) or r["tested"] == 0:
            continue
        rate = r["rejected"] * r["R"] / r["tested"]
        se = math.sqrt(0.05 * 0.95 / r["tested"])
        test = "fit to reference (exact X²)" if c.section == "reference" else "balance (exact X²)"
        if r["aggregate"] != "prompt":
            test = "every prompt balanced (Fisher over prompts)"
        lines.append(f"| {test} | {c.k} | {c.n} | {c.prompts} | {r['aggregate']} | {int(r['tested'])} | {rate:.3f} | {se:.3f} |")
    return "\n".join(lines)


def gap_contains_zero(result: pd.DataFrame, cases: dict[int, Case]) -> str:
    lines = ["| K | n | P | aggregate | R | interval holds 0 |", "|---|---|---|---|---|---|"]
    for _, r in result.iterrows():
        c = cases[int(r["case"])]
        if r["metric"] == "max_min_gap" and c.description.startswith(("exact balance", "all prompts balanced")):
            lines.append(f"| {c.k} | {c.n} | {c.prompts} | {r['aggregate']} | {int(r['R'])} | {r['observed']:.3f} |")
    return "\n".join(lines)


def summary(result: pd.DataFrame) -> str:
    """Worst observed coverage per section, metric, aggregate and method."""
    lines = ["| section | metric | aggregate | method | target | cases | worst observed | mean observed |", "|---|---|---|---|---|---|---|---|"]
    grouped = result.groupby(["section", "metric", "aggregate", "method", "target"], sort=False)
    for (section, metric, aggregate, method, target), g in grouped:
        lines.append(f"| {section} | {metric} | {aggregate} | {method} | {target} | {len(g)} | {g['observed'].min():.3f} | {g['observed'].mean():.3f} |")
    return "\n".join(lines)


SECTIONS = ("share", "skew", "aggregate", "reference", "paired")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer replicates: a few minutes")
    ap.add_argument("--replicates", type=int, default=None, help="replicates per per-prompt case (default 1000, quick 200; a quarter with a reference)")
    ap.add_argument("--aggregate-replicates", type=int, default=None, help="replicates per aggregate case (default 300, quick 60; half with a reference or paired)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    args = ap.parse_args()
    reps = args.replicates or (200 if args.quick else 1000)
    agg = args.aggregate_replicates or (60 if args.quick else 300)
    rngs = dict(zip(SECTIONS, np.random.default_rng(args.seed).spawn(len(SECTIONS))))

    t0 = time.perf_counter()
    import t2ibias.metrics.score  # noqa: F401  (import time is not the benchmark's)

    cases: dict[int, Case] = {}
    parts = []
    timings = []

    def run(section: str, sim: Sim, method: str = "clopper-pearson") -> None:
        t = time.perf_counter()
        rows = score_rows(sim, method)
        res = coverage(rows, sim)
        res["section"] = section
        parts.append(res)
        timings.append((section, method, len(sim.counts), time.perf_counter() - t))
        print(f"{section} ({method}): {len(sim.counts)} prompts in {timings[-1][3]:.1f} s", file=sys.stderr, flush=True)

    if "share" in args.sections:
        sim, methods = share_cases(rngs["share"], reps, cases)
        for method in methods:
            run("share", sim, method)
    if "skew" in args.sections:
        for k in (2, 4, 7):
            run("skew", skew_cases(rngs["skew"], reps, cases, k))
    if "aggregate" in args.sections:
        run("aggregate", aggregate_cases(rngs["aggregate"], agg, cases, args.quick))
        run("aggregate", aggregate_cases_k4(rngs["aggregate"], agg, cases))
    if "reference" in args.sections:
        # the score stage draws a fresh exact null for every reference prompt: fewer replicates here
        for sim in reference_cases(rngs["reference"], max(reps // 4, 1), cases, max(agg // 2, 1)):
            run("reference", sim)
    if "paired" in args.sections:
        for sim in paired_cases(rngs["paired"], max(agg // 2, 1), cases):
            run("paired", sim)
    result = pd.concat(parts, ignore_index=True)
    result = result.groupby(["section", "case", "metric", "label", "aggregate", "method", "target"], sort=False).agg(
        R=("R", "sum"), observed=("observed", lambda s: np.average(s, weights=result.loc[s.index, "R"])),
        width=("width", lambda s: np.average(s, weights=result.loc[s.index, "R"])), no_interval=("no_interval", "sum"),
        rejected=("rejected", lambda s: np.average(s, weights=result.loc[s.index, "R"])), tested=("tested", "sum")).reset_index()
    elapsed = time.perf_counter() - t0

    text, findings = table(result, cases)
    print(f"# Coverage of the score stage's 95 % intervals ({'quick' if args.quick else 'full' if args.replicates is None and args.aggregate_replicates is None else 'custom'} run, seed {args.seed})\n")
    print(f"{reps} replicates per per-prompt case ({max(reps // 4, 1)} with a reference), {agg} per aggregate case "
          f"({max(agg // 2, 1)} with a reference or paired); run time {elapsed:.0f} s.\n")
    print("## Worst case per interval\n")
    print(summary(result) + "\n")
    print(f"## Below {TARGET:.0%} by more than two MC standard errors, where the method claims validity\n")
    print("\n".join(f"- {f}" for f in findings) if findings else "- none")
    print("\n## Max–min gap between equal groups: does the interval hold 0?\n")
    print(gap_contains_zero(result, cases) + "\n")
    print("## Size of the tests under H0 (nominal 0.05)\n")
    print(balance_tests(result, cases) + "\n")
    print("## Every case\n")
    print(text + "\n")
    print("## Time per compute_metrics call\n")
    print("| section | share method | prompts | seconds |\n|---|---|---|---|")
    for section, method, prompts, seconds in timings:
        print(f"| {section} | {method} | {prompts} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
