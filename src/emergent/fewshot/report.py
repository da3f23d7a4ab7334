"""Aggregation over seeds, the data advantage, and the stage's outputs (metrics, plots, summary).

Data advantage (Le Scao & Rush 2021, "How many data points is a prompt worth?"): the number of
examples per class head fine-tuning needs to match prompt fine-tuning's accuracy, read off the
head curve by linear interpolation between its measured k.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from emergent.evaluation.plots import pyplot, save_png, write_csv
from emergent.io import atomic_write_text, write_json

CONTINUOUS = ("gold_logprob", "gold_word_logprob", "brier", "ece")

# LM-BFF (Gao et al. 2021), RoBERTa-large, K=16 per class: published anchors beside ours.
ANCHORS = [
    ("SST-2", "zero_shot", "83.6", "RoBERTa-large, LM-BFF Table 3"),
    ("SST-2", "prompt", "92.7 ± 0.9", "prompt-based FT, K=16"),
    ("SST-2", "head", "81.4 ± 3.8", "head FT, K=16"),
    ("MR", "zero_shot", "80.8", "RoBERTa-large, LM-BFF Table 3"),
    ("MR", "prompt", "87.0", "prompt-based FT, K=16"),
    ("MR", "head", "76.9 ± 5.9", "head FT, K=16"),
]


def aggregate(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{method: {k: {"mean", "std", "n_seeds", <continuous metric means>}}} (k as str keys)."""
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["method"], int(row["k"]))].append(row)
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (method, k), group in sorted(groups.items(), key=lambda item: item[0][1]):
        accs = [float(r["accuracy"]) for r in group]
        cell = {
            "mean": round(statistics.fmean(accs), 4),
            "std": round(statistics.stdev(accs), 4) if len(accs) > 1 else 0.0,
            "n_seeds": len(accs),
        }
        for key in CONTINUOUS:
            values = [float(r[key]) for r in group if key in r]
            if values:
                cell[key] = round(statistics.fmean(values), 4)
        if len(group) == 1 and "accuracy_ci_low" in group[0]:
            # one run (zero-shot): no spread over seeds, the test texts' interval instead
            cell["ci_low"] = round(float(group[0]["accuracy_ci_low"]), 4)
            cell["ci_high"] = round(float(group[0]["accuracy_ci_high"]), 4)
        out[method][str(k)] = cell
    return dict(out)


def headline(table: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict:
    """Only mean/std/n_seeds (metrics/fewshot.json stays readable in `dvc metrics show`)."""
    keep = ("mean", "std", "n_seeds")
    return {
        method: {k: {key: cell[key] for key in keep} for k, cell in cells.items()}
        for method, cells in table.items()
    }


def matching_k(curve: Mapping[int, float], target: float) -> float | None:
    """Smallest k at which the (running-max) curve reaches `target`, linearly interpolated;
    None if it never does within the measured k."""
    points = sorted(curve.items())
    best = -1.0
    previous: tuple[int, float] | None = None
    for k, value in points:
        value = max(value, best)
        if value >= target:
            if previous is None or value == previous[1]:
                return float(k)
            k0, v0 = previous
            return k0 + (target - v0) * (k - k0) / (value - v0)
        best, previous = value, (k, value)
    return None


def data_advantage(table: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[dict]:
    """Per k of prompt fine-tuning: the head k that matches it and the difference."""
    head = {int(k): c["mean"] for k, c in table.get("head", {}).items()}
    rows = []
    for k, cell in sorted(table.get("prompt", {}).items(), key=lambda kv: int(kv[0])):
        if not head:
            break
        match = matching_k(head, cell["mean"])
        rows.append(
            {
                "k": int(k),
                "prompt": cell["mean"],
                "head_k_equivalent": None if match is None else round(match, 1),
                "advantage": None if match is None else round(match - int(k), 1),
                "head_max_k": max(head),
            }
        )
    return rows


def run_id(spec: str, key: str) -> tuple[str, str, int]:
    """`model/method/k` of a comparison spec (the model name may itself hold no `/`)."""
    parts = spec.rsplit("/", 2)
    if len(parts) != 3 or not parts[2].isdigit():
        raise ValueError(f"{key}={spec!r}: expected <model>/<method>/<k>")
    return parts[0], parts[1], int(parts[2])


def per_example(rows: Sequence[Mapping[str, Any]], model: str, method: str, k: int):
    """Per test text, the share of this setting's runs (seeds) that got it right: [N] or None."""
    import numpy as np

    runs = [
        r["correct"]
        for r in rows
        if r["model"] == model and r["method"] == method and int(r["k"]) == k and "correct" in r
    ]
    return np.mean(np.asarray(runs, dtype=np.float64), axis=0) if runs else None


def paired_comparisons(
    rows: Sequence[Mapping[str, Any]], pairs: Sequence[Mapping[str, str]], bootstrap: Any
) -> list[dict[str, Any]]:
    """Accuracy difference a − b over the same test texts, each side averaged over its seeds,
    with a paired bootstrap interval over the texts (both sides resampled together).

    A pair whose runs are absent (a model or k not in this protocol) is skipped.
    """
    import numpy as np

    from emergent.evaluation.bootstrap import interval

    out = []
    for index, pair in enumerate(pairs):
        a = run_id(str(pair["a"]), f"fewshot.compare[{index}].a")
        b = run_id(str(pair["b"]), f"fewshot.compare[{index}].b")
        left, right = per_example(rows, *a), per_example(rows, *b)
        if left is None or right is None:
            continue
        counts = np.stack([left, right, np.ones_like(left)], -1)
        low, high = interval(lambda t: (t[..., 0] - t[..., 1]) / t[..., 2], [counts], bootstrap)
        out.append(
            {
                "a": str(pair["a"]),
                "b": str(pair["b"]),
                "a_accuracy": round(float(left.mean()), 4),
                "b_accuracy": round(float(right.mean()), 4),
                "difference": round(float(left.mean() - right.mean()), 4),
                "ci_low": round(low, 4),
                "ci_high": round(high, 4),
                "excludes_zero": bool(low > 0 or high < 0),
                "n_texts": len(left),
            }
        )
    return out


def scale_rows(
    tables: Mapping[str, Mapping[str, Any]], models: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One row per (model, method) at the method's largest k: the scale axis as a table."""
    out = []
    for model, table in tables.items():
        info = models.get(model, {})
        for method, cells in table.items():
            k = max(cells, key=int)
            cell = cells[k]
            out.append(
                {
                    "model": model,
                    "family": info.get("family", "masked"),
                    "params": info.get("params"),
                    "training_tokens": info.get("pretrain_tokens"),
                    "method": method,
                    "k": int(k),
                    "accuracy": cell["mean"],
                    "gold_logprob": cell.get("gold_logprob"),
                }
            )
    return sorted(out, key=lambda r: (r["params"] or 0, r["model"], r["method"]))


def _tokens(value: Any) -> str:
    return "unknown" if not value else f"{float(value):.2g}"


def _pm(cell: Mapping[str, Any] | None) -> str:
    if not cell:
        return ""
    mean = 100 * cell["mean"]
    if cell["n_seeds"] > 1:
        return f"{mean:.1f} ± {100 * cell['std']:.1f}"
    if "ci_low" in cell:
        return f"{mean:.1f} ({100 * cell['ci_low']:.1f}–{100 * cell['ci_high']:.1f})"
    return f"{mean:.1f}"


def summary_markdown(
    task: str,
    tables: Mapping[str, Mapping[str, Any]],
    models: Mapping[str, Mapping[str, Any]],
    settings: Mapping[str, Any],
    comparisons: Sequence[Mapping[str, Any]] = (),
) -> str:
    lines = [
        f"# Few-shot and in-context learning: `{task}`",
        "",
        "Accuracy (%) on the fixed test subset, mean ± std over seeds (a method run once, "
        "zero-shot: its 95% bootstrap interval over the test texts in parentheses); k = labelled "
        "examples per class (training set; the dev set used for model selection has the same "
        "size).",
        "",
        "| setting | value |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in settings.items()],
        "",
    ]
    for model, table in tables.items():
        info = models.get(model, {})
        ks = sorted({int(k) for cells in table.values() for k in cells})
        lines += [
            f"## {model}",
            "",
            f"{info.get('params', '?'):,} parameters; pretraining: {info.get('pretraining', '?')}."
            if isinstance(info.get("params"), int)
            else f"pretraining: {info.get('pretraining', '?')}",
            "",
            "| method | " + " | ".join(f"k={k}" for k in ks) + " |",
            "| --- | " + " | ".join("---" for _ in ks) + " |",
        ]
        for method, cells in table.items():
            lines.append(f"| {method} | " + " | ".join(_pm(cells.get(str(k))) for k in ks) + " |")
        lines += ["", "Continuous metrics (mean over seeds):", ""]
        lines += [
            "| method | k | gold log-prob | gold word log-prob | Brier | ECE |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for method, cells in table.items():
            for k, cell in cells.items():
                values = [cell.get(key) for key in CONTINUOUS]
                text = ["" if v is None else f"{v:.3f}" for v in values]
                lines.append(f"| {method} | {k} | " + " | ".join(text) + " |")
        advantage = data_advantage(table)
        if advantage:
            lines += [
                "",
                "Data advantage of the prompt (Le Scao & Rush 2021): head fine-tuning examples "
                "per class needed to match prompt fine-tuning, interpolated on the head curve.",
                "",
                "| prompt k | prompt acc | head k matching it | advantage (examples/class) |",
                "| --- | --- | --- | --- |",
            ]
            for row in advantage:
                match = (
                    f"> {row['head_max_k']} (not reached)"
                    if row["head_k_equivalent"] is None
                    else f"{row['head_k_equivalent']}"
                )
                gain = "" if row["advantage"] is None else f"{row['advantage']}"
                lines.append(f"| {row['k']} | {100 * row['prompt']:.1f} | {match} | {gain} |")
        lines.append("")
    if comparisons:
        lines += [
            "## Paired comparisons",
            "",
            "Accuracy difference (points) over the same test texts, each side averaged over its "
            "seeds; 95% paired bootstrap interval over the texts.",
            "",
            "| a | b | a | b | a − b | interval | excludes 0 |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for c in comparisons:
            lines.append(
                f"| {c['a']} | {c['b']} | {100 * c['a_accuracy']:.1f} | "
                f"{100 * c['b_accuracy']:.1f} | {100 * c['difference']:+.1f} | "
                f"{100 * c['ci_low']:+.1f} to {100 * c['ci_high']:+.1f} | "
                f"{'yes' if c['excludes_zero'] else 'no'} |"
            )
        lines.append("")
    scale = scale_rows(tables, models)
    if len(tables) > 1:
        lines += [
            "## Across scale",
            "",
            "Each method at its largest k, by parameters (training tokens: pretraining tokens "
            "where known; our MLMs: the tokens of this pipeline's MLM steps).",
            "",
            "| model | family | parameters | training tokens | method | k | accuracy | "
            "gold log-prob |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in scale:
            gold = "" if r["gold_logprob"] is None else f"{r['gold_logprob']:.3f}"
            params = "?" if r["params"] is None else f"{r['params'] / 1e6:.1f}M"
            lines.append(
                f"| {r['model']} | {r['family']} | {params} | {_tokens(r['training_tokens'])} | "
                f"{r['method']} | {r['k']} | {100 * r['accuracy']:.1f} | {gold} |"
            )
        lines.append("")
    lines += [
        "## Published anchors (LM-BFF, Gao et al. 2021; RoBERTa-large, 355M parameters, K=16)",
        "",
        "| dataset | method | accuracy | note |",
        "| --- | --- | --- | --- |",
        *[f"| {d} | {m} | {a} | {n} |" for d, m, a, n in ANCHORS],
        "",
        "Rotten Tomatoes snippets (our default sentiment data) are the source of MR, so MR is "
        "the closer anchor; our backbones are 10-100x smaller than RoBERTa-large.",
        "",
    ]
    return "\n".join(lines)


def write_outputs(
    rows: Sequence[Mapping[str, Any]],
    models: Mapping[str, Mapping[str, Any]],
    task: str,
    settings: Mapping[str, Any],
    metrics_path: Path,
    plots_dir: Path,
    report_dir: Path,
    comparisons: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """metrics/fewshot.json, plots/fewshot/*.csv + PNGs, reports/fewshot/{summary.md,...}.

    `rows` may carry per-text lists (`correct`, `prior`): they stay out of results.csv."""
    rows = [{k: v for k, v in r.items() if not isinstance(v, list)} for r in rows]
    tables = {
        model: aggregate([r for r in rows if r["model"] == model])
        for model in dict.fromkeys(r["model"] for r in rows)
    }
    write_json(metrics_path, {model: headline(table) for model, table in tables.items()})
    write_json(
        report_dir / "details.json",
        {"models": models, "tables": tables, "comparisons": list(comparisons)},
    )
    order = {name: i for i, name in enumerate(_FIRST)}
    fields = sorted({key for row in rows for key in row}, key=lambda f: (order.get(f, 99), f))
    write_csv(report_dir / "results.csv", rows, fields)
    summary = summary_markdown(task, tables, models, settings, comparisons)
    atomic_write_text(report_dir / "summary.md", summary)
    _plots(tables, models, plots_dir)
    if len(tables) > 1:
        write_csv(
            plots_dir / "scale.csv",
            scale_rows(tables, models),
            [
                "model",
                "family",
                "params",
                "training_tokens",
                "method",
                "k",
                "accuracy",
                "gold_logprob",
            ],
        )
    return tables


_FIRST = ("model", "method", "k", "seed", "accuracy")


def _plots(tables: Mapping[str, Any], models: Mapping[str, Any], out: Path) -> None:
    methods = sorted({m for table in tables.values() for m in table})
    first = next(iter(tables))
    for method in methods:
        cells = tables[first].get(method, {})
        write_csv(
            out / f"k_{method}.csv",
            [
                {
                    "k": int(k),
                    "accuracy": c["mean"],
                    "low": c.get("ci_low", round(c["mean"] - c["std"], 4)),
                    "high": c.get("ci_high", round(c["mean"] + c["std"], 4)),
                    "model": first,
                }
                for k, c in sorted(cells.items(), key=lambda kv: int(kv[0]))
            ],
            ["k", "accuracy", "low", "high", "model"],
        )
        size_rows = []
        for model, table in tables.items():
            cells = table.get(method, {})
            if cells:
                k = max(cells, key=int)
                size_rows.append(
                    {
                        "params": models.get(model, {}).get("params", 0),
                        "pretrain_tokens": models.get(model, {}).get("pretrain_tokens") or 0,
                        "accuracy": cells[k]["mean"],
                        "k": int(k),
                        "model": model,
                    }
                )
        size_rows.sort(key=lambda r: (r["params"], r["pretrain_tokens"]))
        write_csv(
            out / f"size_{method}.csv",
            size_rows,
            ["params", "pretrain_tokens", "accuracy", "k", "model"],
        )
    plt = pyplot()
    fig, axes = plt.subplots(1, len(tables), figsize=(5.5 * len(tables), 4), squeeze=False)
    for ax, (model, table) in zip(axes[0], tables.items(), strict=True):
        all_ks = sorted({int(k) for cells in table.values() for k in cells})
        for index, (method, cells) in enumerate(table.items()):
            color = f"C{index}"  # axhline does not advance the colour cycle
            ks = sorted(int(k) for k in cells)
            mean = [cells[str(k)]["mean"] for k in ks]
            std = [cells[str(k)]["std"] for k in ks]
            if len(ks) == 1:
                cell = cells[str(ks[0])]
                ax.axhline(mean[0], linestyle="--", linewidth=1, label=method, color=color)
                if "ci_low" in cell:  # the test texts' interval of a single run
                    ax.axhspan(cell["ci_low"], cell["ci_high"], alpha=0.08, color=color)
                continue
            ax.plot(ks, mean, marker="o", label=method, color=color)
            ax.fill_between(
                ks,
                [m - s for m, s in zip(mean, std, strict=True)],
                [m + s for m, s in zip(mean, std, strict=True)],
                alpha=0.2,
                color=color,
            )
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(all_ks, [str(k) for k in all_ks])
        ax.set_xlabel("k (examples per class)")
        ax.set_ylabel("accuracy")
        ax.set_title(model)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_png(fig, out / "accuracy_vs_k.png")
    if len(tables) > 1:
        _scale_plot(scale_rows(tables, models), out)


def _scale_plot(rows: Sequence[Mapping[str, Any]], out: Path) -> None:
    """Accuracy and gold-label log-probability against parameters, one line per method."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    methods = sorted({r["method"] for r in rows})
    for ax, metric, label in (
        (axes[0], "accuracy", "accuracy (largest k)"),
        (axes[1], "gold_logprob", "gold-label log-prob (largest k)"),
    ):
        for index, method in enumerate(methods):
            points = [
                (r["params"], r[metric], r["model"])
                for r in rows
                if r["method"] == method and r[metric] is not None and r["params"]
            ]
            if not points:
                continue
            ax.plot(
                [p for p, _, _ in points],
                [v for _, v, _ in points],
                marker="o",
                label=method,
                color=f"C{index}",
            )
        for r in rows:
            if r["params"] and r[metric] is not None and r["method"] == methods[0]:
                ax.annotate(r["model"], (r["params"], r[metric]), fontsize=7, alpha=0.7)
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    save_png(fig, out / "accuracy_vs_size.png")
