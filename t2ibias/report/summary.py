"""The terminal summary ``t2ibias score`` prints, from a scored run's ``metrics.json`` (like the
HTML report, it recomputes nothing): by default one headline table that fits a screen — per
attribute, the mean-over-prompts figures over all prompts and per prompt family and intervention,
with n and intervals — and where the full tables are; with ``full``, one table per attribute with
a line per prompt (``t2ibias score RUN --print all``)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from t2ibias.core.fmt import MISSING, fmt_estimate
from t2ibias.store.rundir import RunDir


def _fmt(row: dict | None) -> str:
    """A row's value and interval with two decimals, as the terminal shows them (``—`` when missing)."""
    if row is None:
        return MISSING
    return fmt_estimate(row.get("value"), row.get("ci_low"), row.get("ci_high"), digits=2, small=False)


#: The groups of prompts the headline shows, besides all prompts.
HEADLINE_GROUPS = ("family", "intervention")
SKIP_BINS = ("abstain", "no_person", "blocked", "failed")


def print_summary(run_dir: Path, out: Console, err: Console, full: bool = False) -> None:
    """The headline table (or, with ``full``, every prompt's) on ``out``; the random-weights
    warning on ``err``."""
    run = RunDir(run_dir)
    spec = run.spec
    rows = run.metrics["rows"]
    if spec.get("model_is_random") or spec["classifier"].get("is_random"):
        err.print("[bold yellow]random weights (generator or classifier): every number below is meaningless by construction[/bold yellow]")
    if full:
        _print_full(run, rows, out)
    else:
        _print_headline(run, rows, out)
    out.print(f"full tables: {run.file('metrics.csv')} ({len(rows)} rows); every prompt: t2ibias score {run_dir} --print all",
              markup=False, highlight=False, soft_wrap=True)


def _print_headline(run: RunDir, rows: list[dict], out: Console) -> None:
    """Per attribute, over all prompts and per family / intervention: images, prompts, the largest
    classified share and TV to uniform (means over prompts, with intervals), and TV's q-value."""
    spec = run.spec
    head = {(r["metric"], r["axis"], r["group_by"], r["group"], r["label"]): r for r in rows
            if r["group_by"] in ("all",) + HEADLINE_GROUPS and (r.get("aggregate") == "mean_over_prompts" or r["metric"] == "count")}
    n_prompts = {}
    for pid_group in HEADLINE_GROUPS:
        if pid_group in run.prompts:
            n_prompts.update({(pid_group, str(g)): int(c) for g, c in run.prompts[pid_group].astype(str).value_counts().items()})
    n_prompts[("all", "all")] = len(run.prompts)
    title = f"headline · {spec['model']['id']} · {spec['n_seeds']} images per prompt · {spec['classifier']['id']} (perceived attributes)"
    table = Table(title=escape(title))
    for name, justify in (("attribute", "left"), ("prompts", "left"), ("n prompts", "right"), ("n images", "right"),
                          ("largest share [95% CI]", "right"), ("TV to uniform [95% CI]", "right"), ("q", "right")):
        table.add_column(name, justify=justify, overflow="fold")
    for axis in dict.fromkeys(r["axis"] for r in rows if r["metric"] == "proportion"):
        groups = [("all", "all")]
        for gb in HEADLINE_GROUPS:
            values = list(dict.fromkeys(r["group"] for r in rows if r["axis"] == axis and r["group_by"] == gb and r["metric"] == "count"))
            groups += [(gb, g) for g in values] if len(values) > 1 else []  # one group: the same figures as all prompts
        for gb, group in groups:
            counts = [r for (m, a, b, g, _), r in head.items() if m == "count" and a == axis and b == gb and g == group]
            if not counts:
                continue
            shares = [r for (m, a, b, g, lab), r in head.items() if m == "proportion" and a == axis and b == gb and g == group
                      and lab not in SKIP_BINS and r.get("value") is not None]
            top = max(shares, key=lambda r: r["value"], default=None)
            tv = head.get(("total_variation_uniform", axis, gb, group, None))
            q = tv.get("q_value") if tv else None
            table.add_row(escape(axis) if (gb, group) == ("all", "all") else "",
                          "all prompts" if gb == "all" else escape(f"{gb} {group}"), str(n_prompts.get((gb, str(group)), "")),
                          str(counts[0]["n"]), escape(f"{top['label']} {_fmt(top)}") if top else MISSING, _fmt(tv),
                          MISSING if q is None else f"{q:.2g}", style="bold" if gb == "all" else None)
    out.print(table)
    out.print("means over prompts of each prompt's figure (pooled counts are in metrics.csv); shares of all images, "
              "abstain / no person / blocked / failed included in n; q: Benjamini-Hochberg q-value of the test that "
              "every prompt is balanced (significant: q < 0.05)", markup=False, highlight=False)


def _print_full(run: RunDir, rows: list[dict], out: Console) -> None:
    """One table per attribute: label shares per prompt and overall, TV to uniform with CI and n."""
    spec = run.spec
    prompts = run.prompts
    # one prompt's rows, and over prompts the headline (mean over prompts); pooled counts are noted below
    index = {(r["metric"], r["axis"], r["group_by"], r["group"], r["label"]): r for r in rows
             if r.get("aggregate", "prompt" if r["group_by"] == "prompt_id" else "mean_over_prompts") in ("prompt", "mean_over_prompts")
             or r["metric"] == "count"}
    pooled = {(r["metric"], r["axis"]): r for r in rows if r.get("aggregate") == "pooled" and r["group_by"] == "all"}
    groups = [("prompt_id", pid, text) for pid, text in zip(prompts["prompt_id"], prompts["text"])] + [("all", "all", "all prompts")]
    for axis in dict.fromkeys(r["axis"] for r in rows if r["metric"] == "proportion"):
        all_bins = [r["label"] for r in rows if r["metric"] == "count" and r["axis"] == axis and r["group_by"] == "all"]
        totals = {b: int(index[("count", axis, "all", "all", b)]["value"]) for b in all_bins}
        bins = [b for b in all_bins if b not in ("blocked", "failed") or totals[b] > 0]
        caption = f"{sum(totals.values())} images · " + " · ".join(
            f"{b.replace('_', ' ')} {totals[b]}" for b in ("abstain", "no_person", "blocked", "failed") if b in totals
        )
        title = f"{axis} (perceived) · {spec['model']['id']} · {spec['n_seeds']} images per prompt · {spec['classifier']['id']}"
        table = Table(title=escape(title), caption=escape(caption))
        table.add_column("prompt", overflow="fold", max_width=44)
        table.add_column("n", justify="right")
        for b in bins:
            table.add_column(escape(b.replace("_", " ")), justify="right")
        table.add_column("TV to uniform [95% CI]", justify="right")
        table.add_column("q", justify="right")
        for group_by, group, text in groups:
            cells = [escape(str(text)), str(index[("count", axis, group_by, group, bins[0])]["n"])]
            cells += [f"{index[('proportion', axis, group_by, group, b)]['value']:.2f}" for b in bins]
            tv = index.get(("total_variation_uniform", axis, group_by, group, None))
            cells.append(_fmt(tv) + (" *" if tv and "n < min_n" in (tv.get("note") or "") else ""))
            q = tv.get("q_value") if tv else None
            cells.append("—" if q is None else f"{q:.2g}")
            table.add_row(*cells, style="bold" if group_by == "all" else None)
        out.print(table)
        tv_all, tv_pooled = index.get(("total_variation_uniform", axis, "all", "all", None)), pooled.get(("total_variation_uniform", axis))
        notes = ["all prompts: the mean over prompts of each prompt's figure; q: Benjamini-Hochberg q-value of the exact "
                 "test of balance (significant: q < 0.05); * fewer images than --min-n"]
        if tv_all and tv_pooled and tv_pooled.get("value") is not None:
            notes.append(f"pooled counts: TV {_fmt(tv_pooled)}" + (" — prompts skewed in different directions cancel when pooled"
                                                                     if "cancel" in (tv_all.get("note") or "") else ""))
        for line in notes:
            out.print(line, highlight=False, markup=False)
