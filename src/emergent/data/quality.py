"""Great Expectations (1.x) quality gate over `data/prepared/`.

Each prepared dataset is turned into pandas frames with a few derived columns (token counts,
IOB2 validity, overlap with train) and checked by an expectation suite per frame. Results are
summarised per expectation with a handful of offending values — never whole datasets — and
rendered as Data Docs HTML.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from emergent.data.formats import iob2_error
from emergent.data.prepare import SPLITS, load_task_split
from emergent.errors import ConfigError, DataError

log = logging.getLogger(__name__)

EXAMPLES_PER_EXPECTATION = 5


@dataclass
class Check:
    """One frame to validate against a list of expectations."""

    dataset: str  # ner | sentiment | corpus
    name: str  # e.g. ner_train, ner_tags
    frame: pd.DataFrame
    expectations: list[Any] = field(default_factory=list)


def _text_frame(texts: Iterable[str]) -> pd.DataFrame:
    frame = pd.DataFrame({"text": list(texts)})
    frame["n_chars"] = frame["text"].str.len()
    return frame


def _bounds(cfg: Mapping[str, Any], split: str) -> int:
    return int((cfg.get("min_rows") or {}).get(split, 1))


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


def label_expectations(name: str, cfg: Any, observed: set[str]) -> tuple[list[str] | None, dict]:
    """The label set and label shares to check a labelled-text task against.

    `labels` comes from config, else from the label map's values; with neither the label set
    is not checked. Shares (`label_share`) are checked only for a known label set that holds
    every label they name: configured `labels` that do not hold them are a config error,
    while a label set derived from the label map (or none at all, as after
    `data.<task>.label_map=null labels=null`) skips the share check with a warning instead of
    failing on the default shares of other data."""
    configured = cfg.get("labels")
    label_map = cfg.get("label_map")
    if configured is not None:
        labels: list[str] | None = [str(x) for x in configured]
    elif label_map:
        labels = sorted({str(v) for v in label_map.values()})
    else:
        labels = None
    shares = {str(k): v for k, v in (_shares(cfg) or {}).items()}
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


def _common(frame: pd.DataFrame, required: list[str], split: str, min_rows: int) -> list[Any]:
    import great_expectations.expectations as gxe

    expectations: list[Any] = []
    for column in required:
        expectations.append(gxe.ExpectColumnToExist(column=column))
        expectations.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
    expectations.append(gxe.ExpectTableRowCountToBeBetween(min_value=min_rows))
    if split == "train":
        # Held-out files are kept whole (their duplicates are counted in the manifest).
        expectations.append(gxe.ExpectColumnValuesToBeUnique(column="text"))
    else:
        expectations.append(gxe.ExpectColumnValuesToBeInSet(column="in_train", value_set=[False]))
    return expectations


def token_checks(task: Any, splits: Mapping[str, list[dict]], cfg: DictConfig) -> list[Check]:
    """Tagged-token data: columns, lengths, IOB2 validity, the tag set and tag shares."""
    import great_expectations.expectations as gxe

    name = task.name
    train_texts = {task.text(e) for e in splits["train"]}
    types = cfg.get("entity_types")
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
        expectations = _common(frame, ["tokens", "tags"], split, _bounds(cfg, split))
        expectations += [
            gxe.ExpectColumnValuesToBeBetween(
                column="n_tokens", min_value=int(cfg.min_tokens), max_value=int(cfg.max_tokens)
            ),
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


def _shares(cfg: DictConfig) -> dict[str, Any] | None:
    shares = cfg.get("label_share")
    return OmegaConf.to_container(shares) if shares is not None else None  # type: ignore[return-value]


def text_checks(task: Any, splits: Mapping[str, list[dict]], cfg: DictConfig) -> list[Check]:
    """Labelled-text data: columns, text lengths, the label set and label shares."""
    import great_expectations.expectations as gxe

    name = task.name
    train_texts = {r.get("text") for r in splits["train"]}
    observed = {str(r.get("label")) for rows in splits.values() for r in rows}
    label_set, shares = label_expectations(name, cfg, observed)
    checks = []
    for split, rows in splits.items():
        frame = _text_frame(r.get("text") for r in rows)
        frame["label"] = [str(r.get("label")) for r in rows]
        frame["in_train"] = frame["text"].isin(train_texts) if split != "train" else False
        expectations = _common(frame, ["text", "label"], split, _bounds(cfg, split))
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(
                column="n_chars", min_value=int(cfg.min_chars), max_value=int(cfg.max_chars)
            )
        )
        if label_set is not None:
            expectations.append(
                gxe.ExpectColumnValuesToBeInSet(column="label", value_set=label_set)
            )
        checks.append(Check(name, f"{name}_{split}", frame, expectations))
    labels = pd.Series([str(r.get("label")) for rows in splits.values() for r in rows])
    share = _share_check(name, labels, shares)
    return checks + ([share] if share else [])


def corpus_checks(prepared: Path, cfg: DictConfig, held_out: set[str]) -> list[Check]:
    """The corpus must not contain any validation/test text of any task."""
    import great_expectations.expectations as gxe

    checks = []
    for split in ("train", "validation"):
        path = prepared / "corpus" / f"{split}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run the ingest stage first")
        frame = _text_frame(path.read_text(encoding="utf-8").splitlines())
        frame["in_heldout"] = frame["text"].isin(held_out)
        expectations = [
            gxe.ExpectColumnValuesToNotBeNull(column="text"),
            gxe.ExpectTableRowCountToBeBetween(min_value=_bounds(cfg, split)),
            gxe.ExpectColumnValuesToBeUnique(column="text"),
            gxe.ExpectColumnValuesToBeBetween(column="n_chars", min_value=int(cfg.min_chars)),
            gxe.ExpectColumnValuesToBeInSet(column="in_heldout", value_set=[False]),
        ]
        checks.append(Check("corpus", f"corpus_{split}", frame, expectations))
    return checks


def build_checks(prepared: Path, data_cfg: DictConfig, tasks: list[Any]) -> list[Check]:
    """Every task's checks (the task picks its kind's checks) and the corpus checks."""
    checks: list[Check] = []
    held_out: set[str] = set()
    for task in tasks:
        splits = {s: load_task_split(prepared, task.name, s) for s in SPLITS}
        for split, rows in splits.items():
            if not rows:
                raise DataError(
                    prepared / task.name / f"{split}.jsonl",
                    f"the {split} split of task {task.name!r} is empty: re-run ingest "
                    f"(it carves a missing validation/test split out of train)",
                )
        checks += task.quality_checks(splits, data_cfg[task.name])
        held_out |= {task.text(e) for s in ("validation", "test") for e in splits[s]}
    return checks + corpus_checks(prepared, data_cfg.corpus, held_out)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and value != value:  # NaN
        return None
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "item"):
        return value.item()
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def summarize(result: Any, check: Check) -> list[dict[str, Any]]:
    """One compact record per expectation: what, pass/fail, how many rows, a few examples."""
    rows = []
    for item in result.results:
        config = item.expectation_config
        kwargs = {k: v for k, v in config.kwargs.items() if k not in {"batch_id"}}
        outcome = item.result or {}
        examples = (outcome.get("partial_unexpected_list") or [])[:EXAMPLES_PER_EXPECTATION]
        rows.append(
            _jsonable(
                {
                    "check": check.name,
                    "expectation": config.type,
                    "kwargs": kwargs,
                    "success": bool(item.success),
                    "rows": len(check.frame),
                    "unexpected_count": outcome.get("unexpected_count"),
                    "unexpected_percent": outcome.get("unexpected_percent"),
                    "observed_value": outcome.get("observed_value"),
                    "examples": examples,
                    "meta": dict(config.meta or {}),
                    "exception": (item.exception_info or {}).get("exception_message")
                    if getattr(item, "exception_info", None)
                    and item.exception_info.get("raised_exception")
                    else None,
                }
            )
        )
    return rows


def run_checks(
    checks: list[Check], docs_dir: Path | None, assets_dir: Path | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Validate every check with an ephemeral GX context; returns summaries per dataset.

    With `docs_dir`, Data Docs are rendered there. GX links its JavaScript/CSS from CDNs, so
    offline the index is an empty page: with `assets_dir` (vendor/, filled by `make assets`)
    the CDN URLs are rewritten to copies in `<docs_dir>/static/vendor/`, so the docs open
    anywhere without a network. URLs without a local copy keep their CDN link.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # pragma: no cover - cosmetic only
        log.debug("could not disable GX progress bars", exc_info=True)
    actions = []
    if docs_dir is not None:
        context.add_data_docs_site(
            site_name="quality",
            site_config={
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
            },
        )
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["quality"]))
    source = context.data_sources.add_pandas("prepared")
    summaries: dict[str, list[dict[str, Any]]] = {}
    for check in checks:
        batch = source.add_dataframe_asset(check.name).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=check.name))
        for expectation in check.expectations:
            suite.add_expectation(expectation)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=check.name, data=batch, suite=suite)
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=check.name,
                validation_definitions=[definition],
                actions=actions,
                result_format={
                    "result_format": "SUMMARY",
                    "partial_unexpected_count": EXAMPLES_PER_EXPECTATION,
                },
            )
        )
        result = checkpoint.run(batch_parameters={"dataframe": check.frame})
        for run_result in result.run_results.values():
            summaries.setdefault(check.dataset, []).extend(summarize(run_result, check))

    def offline_docs(docs: Path, assets: Path) -> None:
        import json
        import re
        import shutil

        manifest = assets / "assets.json"
        urls = (
            json.loads(manifest.read_text(encoding="utf-8"))["urls"] if manifest.is_file() else {}
        )
        local = {url: rel for url, rel in urls.items() if (assets / "files" / rel).is_file()}
        if len(local) < len(urls) or not urls:
            log.warning("Data Docs keep some CDN links: run `make assets` for offline copies")
        static = docs / "static" / "vendor"
        for folder in sorted({rel.split("/")[0] for rel in local.values()}):
            shutil.copytree(assets / "files" / folder, static / folder, dirs_exist_ok=True)
        logo = re.compile(r"https://great-expectations-web-assets\.[^\"']*/logo-long\.png[^\"']*")
        for page in docs.rglob("*.html"):
            text = page.read_text(encoding="utf-8")
            up = os.path.relpath(docs / "static", page.parent).replace(os.sep, "/")
            for url, rel in local.items():
                text = text.replace(f'"{url}"', f'"{up}/vendor/{rel}"')
            text = logo.sub(f"{up}/images/logo-long.png", text)  # GX ships the logo itself
            page.write_text(text, encoding="utf-8")

    if docs_dir is not None and assets_dir is not None and docs_dir.is_dir():
        offline_docs(docs_dir, assets_dir)
    return summaries


def failures(summaries: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [row for rows in summaries.values() for row in rows if not row["success"]]


def format_failures(failed: list[dict[str, Any]]) -> str:
    """A readable summary: which expectation, on what, how many rows, examples."""
    lines = [f"{len(failed)} data quality expectation(s) failed:"]
    for row in failed:
        column = row["kwargs"].get("column")
        what = f"{row['check']}: {row['expectation']}" + (
            f" on column {column!r}" if column else ""
        )
        detail = []
        if row.get("unexpected_count") is not None:
            detail.append(f"{row['unexpected_count']} of {row['rows']} rows")
        if row.get("observed_value") is not None:
            detail.append(f"observed {row['observed_value']}")
        meta = row.get("meta") or {}
        if "label" in meta and "share" in meta:
            lo, hi = row["kwargs"].get("min_value"), row["kwargs"].get("max_value")
            detail = [f"label {meta['label']!r} has share {meta['share']}, outside [{lo}, {hi}]"]
        elif row.get("examples"):
            detail.append(f"e.g. {row['examples'][:3]}")
        if row.get("exception"):
            detail.append(f"error: {row['exception']}")
        bounds = {k: v for k, v in row["kwargs"].items() if k not in {"column", "row_condition"}}
        lines.append(f"  - {what} {bounds}: " + "; ".join(detail))
    return "\n".join(lines)
