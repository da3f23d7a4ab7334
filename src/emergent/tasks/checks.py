"""Great Expectations checks of a task kind's prepared splits (each kind's `quality_checks`).

The checks belong to the task kinds: what a valid example is (IOB2 tags, a known label) is
task knowledge. `emergent.data.quality` runs them (and the corpus checks) with GX.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from emergent.data.formats import iob2_error
from emergent.data.quality import Check, min_rows, text_frame
from emergent.errors import ConfigError

if TYPE_CHECKING:
    from emergent.schema import TaskDataConfig

log = logging.getLogger(__name__)


def _share_check(dataset: str, labels: pd.Series, shares: Mapping[str, Any] | None) -> Check | None:
    """Each configured label's share of all labels must stay within [min, max].

    Each expectation carries the label, its observed share and the bounds in `meta`, so a
    failure reads "label 'negative' has share 0.12, outside [0.3, 0.7]"."""
    import great_expectations.expectations as gxe

    if not shares:
        return None
    counts = labels.astype(str).value_counts(normalize=True)
    observed = {str(k): float(counts.get(str(k), 0.0)) for k in shares}
    frame = pd.DataFrame({"label": list(observed), "share": list(observed.values())})
    expectations = [
        gxe.ExpectColumnValuesToBeBetween(
            column="share",
            min_value=float(lo),
            max_value=float(hi),
            row_condition=f"label=={str(label)!r}",
            condition_parser="pandas",
            meta={"label": str(label), "share": round(observed[str(label)], 4)},
        )
        for label, (lo, hi) in shares.items()
    ]
    return Check(dataset, f"{dataset}_label_share", frame, expectations)


def label_expectations(
    name: str, cfg: TaskDataConfig, observed: set[str]
) -> tuple[list[str] | None, dict]:
    """The label set and label shares to check a labelled-text task against.

    `labels` comes from config, else from the label map's values; with neither the label set
    is not checked. Shares (`label_share`) are checked only for a known label set that holds
    every label they name: configured `labels` that do not hold them are a config error,
    while a label set derived from the label map (or none at all, as after
    `data.<task>.label_map=null labels=null`) skips the share check with a warning instead of
    failing on the default shares of other data."""
    configured = cfg.labels
    label_map = cfg.label_map
    if configured is not None:
        labels: list[str] | None = [str(x) for x in configured]
    elif label_map:
        labels = sorted({str(v) for v in label_map.values()})
    else:
        labels = None
    shares = _shares(cfg)
    if not shares:
        return labels, {}
    unknown = sorted(set(shares) - set(labels or []))
    if not unknown:
        return labels, shares
    if configured is not None:
        raise ConfigError(
            f"data.{name}.label_share",
            f"label(s) {unknown} are not in data.{name}.labels ({labels}); "
            f"fix the shares or clear them with ~data.{name}.label_share",
        )
    log.warning(
        "%s: label_share names %s but the labels are %s: label shares not checked "
        "(set data.%s.labels and data.%s.label_share to check them)",
        name,
        sorted(shares),
        labels or sorted(observed),
        name,
        name,
    )
    return labels, {}


def _common(frame: pd.DataFrame, required: list[str], split: str, least_rows: int) -> list[Any]:
    import great_expectations.expectations as gxe

    expectations: list[Any] = []
    for column in required:
        expectations.append(gxe.ExpectColumnToExist(column=column))
        expectations.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
    expectations.append(gxe.ExpectTableRowCountToBeBetween(min_value=least_rows))
    if split == "train":
        # Held-out files are kept whole (their duplicates are counted in the manifest).
        expectations.append(gxe.ExpectColumnValuesToBeUnique(column="text"))
    else:
        expectations.append(gxe.ExpectColumnValuesToBeInSet(column="in_train", value_set=[False]))
    return expectations


def _between(column: str, least: int | None, most: int | None) -> list[Any]:
    """`column` within the configured bounds (a bound not configured is open; none: no check)."""
    import great_expectations.expectations as gxe

    if least is None and most is None:
        return []
    return [gxe.ExpectColumnValuesToBeBetween(column=column, min_value=least, max_value=most)]


def token_checks(task: Any, splits: Mapping[str, list[dict]], cfg: TaskDataConfig) -> list[Check]:
    """Tagged-token data: columns, lengths, IOB2 validity, the tag set and tag shares."""
    import great_expectations.expectations as gxe

    name = task.name
    train_texts = {task.text(e) for e in splits["train"]}
    types = cfg.entity_types
    checks = []
    for split, rows in splits.items():
        frame = pd.DataFrame(
            {
                "tokens": [r.get("tokens") for r in rows],
                "tags": [r.get("tags") for r in rows],
            }
        )
        frame["text"] = [" ".join(t or []) for t in frame["tokens"]]
        frame["n_tokens"] = [len(t or []) for t in frame["tokens"]]
        frame["lengths_match"] = [
            len(t or []) == len(g or [])
            for t, g in zip(frame["tokens"], frame["tags"], strict=True)
        ]
        frame["iob2_valid"] = [iob2_error(list(g or [])) is None for g in frame["tags"]]
        frame["in_train"] = frame["text"].isin(train_texts) if split != "train" else False
        expectations = _common(frame, ["tokens", "tags"], split, min_rows(cfg, split))
        expectations += _between("n_tokens", cfg.min_tokens, cfg.max_tokens)
        expectations += [
            gxe.ExpectColumnValuesToBeInSet(column="lengths_match", value_set=[True]),
            gxe.ExpectColumnValuesToBeInSet(column="iob2_valid", value_set=[True]),
        ]
        checks.append(Check(name, f"{name}_{split}", frame, expectations))

    tags = pd.DataFrame(
        {
            "split": [s for s, rows in splits.items() for r in rows for _ in r.get("tags") or []],
            "tag": [t for rows in splits.values() for r in rows for t in r.get("tags") or []],
        }
    )
    tag_expectations: list[Any] = [gxe.ExpectColumnValuesToNotBeNull(column="tag")]
    if types is not None:
        allowed = ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]
        tag_expectations.append(gxe.ExpectColumnValuesToBeInSet(column="tag", value_set=allowed))
    checks.append(Check(name, f"{name}_tags", tags, tag_expectations))
    share = _share_check(name, tags["tag"], _shares(cfg))
    return checks + ([share] if share else [])


def _shares(cfg: TaskDataConfig) -> dict[str, list[float]]:
    """`label_share` by label as text (a file's labels are text; a map written on the command
    line may have integer keys)."""
    return {str(label): bounds for label, bounds in (cfg.label_share or {}).items()}


def text_checks(task: Any, splits: Mapping[str, list[dict]], cfg: TaskDataConfig) -> list[Check]:
    """Labelled-text data: columns, text lengths, the label set and label shares."""
    import great_expectations.expectations as gxe

    name = task.name
    train_texts = {r.get("text") for r in splits["train"]}
    observed = {str(r.get("label")) for rows in splits.values() for r in rows}
    label_set, shares = label_expectations(name, cfg, observed)
    checks = []
    for split, rows in splits.items():
        frame = text_frame(r.get("text") for r in rows)
        frame["label"] = [str(r.get("label")) for r in rows]
        frame["in_train"] = frame["text"].isin(train_texts) if split != "train" else False
        expectations = _common(frame, ["text", "label"], split, min_rows(cfg, split))
        expectations += _between("n_chars", cfg.min_chars, cfg.max_chars)
        if label_set is not None:
            expectations.append(
                gxe.ExpectColumnValuesToBeInSet(column="label", value_set=label_set)
            )
        checks.append(Check(name, f"{name}_{split}", frame, expectations))
    labels = pd.Series([str(r.get("label")) for rows in splits.values() for r in rows])
    share = _share_check(name, labels, shares)
    return checks + ([share] if share else [])
