"""Plot data for DVC (CSV/JSON) and PNG figures for MLflow and humans."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from emergent.io import atomic_path


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend (no display here or in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    pyplot().close(fig)


def plot_curves(
    path: Path,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str = "step",
    log_y: Sequence[str] = (),
) -> None:
    """One panel per named series ({name: (x, y)}) in a single PNG."""
    plt = pyplot()

    series = {k: v for k, v in series.items() if v[0]}
    if not series:
        return
    fig, axes = plt.subplots(1, len(series), figsize=(4.5 * len(series), 3.4), squeeze=False)
    for ax, (name, (xs, ys)) in zip(axes[0], series.items(), strict=True):
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, linewidth=1.5)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if name in log_y:
            ax.set_yscale("log")
    fig.suptitle(title)
    save_png(fig, path)


def plot_confusion(
    path: Path, labels: Sequence[str], matrix: Sequence[Sequence[int]], title: str
) -> None:
    """Row-normalised confusion matrix with counts annotated."""
    import numpy as np

    plt = pyplot()

    counts = np.asarray(matrix, dtype=float)
    norm = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = max(4.0, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    if len(labels) <= 12:
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(
                    j,
                    i,
                    int(counts[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title(title)
    save_png(fig, path)


def plot_bars(
    path: Path, scores: Mapping[str, Mapping[str, float]], keys: Sequence[str], title: str
) -> None:
    """Grouped bars per class (precision / recall / F1)."""
    import numpy as np

    plt = pyplot()

    names = list(scores)
    x = np.arange(len(names))
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(names) + 2), 3.6))
    for k, key in enumerate(keys):
        ax.bar(x + k * width, [scores[n][key] for n in names], width, label=key)
    ax.set_xticks(x + width * (len(keys) - 1) / 2, names, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title(title)
    save_png(fig, path)
