"""Great Expectations (1.x) quality gate over `data/prepared/`.

The task kinds build their own checks (`emergent.tasks.checks`) from the `Check` frames and
helpers here; this module holds the corpus checks and the GX plumbing that runs them all.
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

from emergent.data.layout import FEEDBACK_TEST, SPLITS, corpus_path, load_task_split, split_path
from emergent.errors import DataError
from emergent.schema import CorpusConfig, DataBase, TaskDataConfig

log = logging.getLogger(__name__)

EXAMPLES_PER_EXPECTATION = 5


@dataclass
class Check:
    """One frame to validate against a list of expectations."""

    dataset: str  # ner | sentiment | corpus
    name: str  # e.g. ner_train, ner_tags
    frame: pd.DataFrame
    expectations: list[Any] = field(default_factory=list)


def text_frame(texts: Iterable[str | None]) -> pd.DataFrame:
    """A `text` column and its length in characters (`n_chars`); a missing text stays a
    missing value, for the checks to report."""
    frame = pd.DataFrame({"text": list(texts)})
    frame["n_chars"] = frame["text"].str.len()
    return frame


def min_rows(cfg: TaskDataConfig | CorpusConfig, split: str) -> int:
    """The configured least number of rows of a split (`min_rows.<split>`); a split with no
    such key (user feedback's test split, as large as users made it) needs one row."""
    least: dict[str, int] = cfg.min_rows.model_dump()
    return least.get(split, 1)


def corpus_checks(prepared: Path, cfg: CorpusConfig, held_out: set[str]) -> list[Check]:
    """The corpus must not contain any validation/test text of any task."""
    import great_expectations.expectations as gxe

    checks = []
    for split in ("train", "validation"):
        path = corpus_path(prepared, split)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run the ingest stage first")
        frame = text_frame(path.read_text(encoding="utf-8").splitlines())
        frame["in_heldout"] = frame["text"].isin(held_out)
        expectations = [
            gxe.ExpectColumnValuesToNotBeNull(column="text"),
            gxe.ExpectTableRowCountToBeBetween(min_value=min_rows(cfg, split)),
            gxe.ExpectColumnValuesToBeUnique(column="text"),
            gxe.ExpectColumnValuesToBeBetween(column="n_chars", min_value=cfg.min_chars),
            gxe.ExpectColumnValuesToBeInSet(column="in_heldout", value_set=[False]),
        ]
        checks.append(Check("corpus", f"corpus_{split}", frame, expectations))
    return checks


def build_checks(prepared: Path, data_cfg: DataBase, tasks: list[Any]) -> list[Check]:
    """Every task's checks (the task picks its kind's checks) and the corpus checks."""
    checks: list[Check] = []
    held_out: set[str] = set()
    for task in tasks:
        splits = {s: load_task_split(prepared, task.name, s) for s in SPLITS}
        for split, rows in splits.items():
            if not rows:
                raise DataError(
                    split_path(prepared, task.name, split),
                    f"the {split} split of task {task.name!r} is empty: re-run ingest "
                    f"(it carves a missing validation/test split out of train)",
                )
        # user feedback's test split (data.<task>.feedback) is checked like any other input
        feedback = split_path(prepared, task.name, FEEDBACK_TEST)
        if feedback.is_file() and (rows := load_task_split(prepared, task.name, FEEDBACK_TEST)):
            splits[FEEDBACK_TEST] = rows
        checks += task.quality_checks(splits, data_cfg.task(task.name))
        held_out |= {task.text(e) for s in splits if s != "train" for e in splits[s]}
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
    actions: list[gx.checkpoint.ValidationAction] = []
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
