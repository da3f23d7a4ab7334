"""Drift of logged traffic against the test-set reference, per task.

Numeric features (length, tokens, unknown-token share, confidence): two-sample
Kolmogorov-Smirnov test plus the population stability index; the predicted-label distribution:
chi-square test on the contingency table plus PSI. A feature drifts when its p-value is below
`p_value`; a task drifts when at least `drift_share` of its features drift (Evidently's
data-drift rule, computed with scipy so it runs offline without telemetry).

scipy.stats (about a second to import) is imported by the two functions that test: the
`monitor` stage of a pipeline without traffic (the usual `dvc repro`) only writes the report.
"""

from __future__ import annotations

import html
from collections import Counter
from typing import Any

import numpy as np

NUMERIC = ("n_chars", "n_tokens", "unk_share", "confidence")
CATEGORICAL = ("label",)


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index over reference quantile bins (0: same distribution)."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        edges = np.array([reference.min() - 0.5, reference.max() + 0.5])
    edges[0], edges[-1] = -np.inf, np.inf
    ref = np.histogram(reference, edges)[0] / len(reference)
    cur = np.histogram(current, edges)[0] / len(current)
    ref, cur = np.clip(ref, 1e-4, None), np.clip(cur, 1e-4, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def categorical(reference: list[str], current: list[str]) -> dict[str, Any]:
    from scipy import stats

    cats = sorted(set(reference) | set(current))
    ref, cur = Counter(reference), Counter(current)
    table = np.array([[ref[c] for c in cats], [cur[c] for c in cats]], dtype=float)
    p = 1.0 if len(cats) < 2 else float(stats.chi2_contingency(table + 0.5)[1])
    shares = table / table.sum(axis=1, keepdims=True)
    index = float(
        np.sum(
            (np.clip(shares[1], 1e-4, None) - np.clip(shares[0], 1e-4, None))
            * np.log(np.clip(shares[1], 1e-4, None) / np.clip(shares[0], 1e-4, None))
        )
    )
    return {
        "test": "chi2",
        "p_value": p,
        "psi": index,
        "reference": {c: round(float(s), 4) for c, s in zip(cats, shares[0], strict=True)},
        "current": {c: round(float(s), 4) for c, s in zip(cats, shares[1], strict=True)},
    }


def compare(
    reference: list[dict[str, Any]],
    current: list[dict[str, Any]],
    p_value: float,
    drift_share: float,
) -> dict[str, Any]:
    """Per-feature tests and the task's verdict."""
    from scipy import stats

    features: dict[str, Any] = {}
    for name in NUMERIC:
        ref = np.array([float(r[name]) for r in reference])
        cur = np.array([float(r[name]) for r in current])
        test = stats.ks_2samp(ref, cur)
        features[name] = {
            "test": "ks",
            "statistic": float(test.statistic),
            "p_value": float(test.pvalue),
            "psi": psi(ref, cur),
            "reference_mean": float(ref.mean()),
            "current_mean": float(cur.mean()),
        }
    for name in CATEGORICAL:
        features[name] = categorical(
            [str(r[name]) for r in reference], [str(r[name]) for r in current]
        )
    for result in features.values():
        result["drift"] = bool(result["p_value"] < p_value)
    drifted = sum(r["drift"] for r in features.values())
    share = drifted / len(features)
    return {
        "rows": len(current),
        "reference_rows": len(reference),
        "drifted_features": drifted,
        "drift_share": share,
        "drift": bool(share >= drift_share),
        "features": features,
    }


def report_html(results: dict[str, Any]) -> str:
    """A self-contained HTML report (no scripts, no CDN)."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>emergent drift report</title>",
        "<style>body{font:14px system-ui;margin:2rem}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px}.drift{background:#fdd}</style></head><body>",
        "<h1>Traffic drift vs the test-set reference</h1>",
    ]
    for task, res in results["tasks"].items():
        parts.append(f"<h2>{html.escape(task)}</h2>")
        if res.get("status") == "no traffic":
            parts.append(
                f"<p>no traffic ({res['rows']} rows; at least {res['min_rows']} needed)</p>"
            )
            continue
        verdict = "DRIFT" if res["drift"] else "no drift"
        parts.append(
            f"<p><b>{verdict}</b>: {res['drifted_features']} of {len(res['features'])} features "
            f"drifted; {res['rows']} traffic rows vs {res['reference_rows']} reference rows.</p>"
            "<table><tr><th>feature</th><th>test</th><th>p-value</th><th>PSI</th>"
            "<th>reference</th><th>current</th></tr>"
        )
        for name, f in res["features"].items():
            ref = f.get("reference_mean", f.get("reference"))
            cur = f.get("current_mean", f.get("current"))
            cls = " class='drift'" if f["drift"] else ""
            parts.append(
                f"<tr{cls}><td>{name}</td><td>{f['test']}</td><td>{f['p_value']:.3g}</td>"
                f"<td>{f['psi']:.3f}</td><td>{html.escape(str(ref))}</td>"
                f"<td>{html.escape(str(cur))}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
