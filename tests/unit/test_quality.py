"""Quality gate: passes on good prepared data, and each kind of problem fails it visibly."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from emergent.data.quality import build_checks, failures, format_failures, run_checks
from emergent.schema import validate_config
from emergent.tasks import all_tasks
from tests.conftest import smoke_cfg


@pytest.fixture(scope="module")
def gate_cfg():
    return smoke_cfg()


def run_gate(prepared: Path, cfg, docs: Path | None = None):
    return run_checks(build_checks(prepared, validate_config(cfg).data, all_tasks(cfg)), docs)


def test_clean_smoke_data_passes_and_docs_are_written(prepared_smoke, gate_cfg, tmp_path) -> None:
    summaries = run_gate(prepared_smoke, gate_cfg, tmp_path / "docs")
    assert set(summaries) == {"ner", "sentiment", "debate", "corpus"}
    assert failures(summaries) == []
    assert (tmp_path / "docs" / "index.html").is_file()


def test_bad_prepared_data_fails_with_examples(prepared_smoke, gate_cfg, tmp_path) -> None:
    bad = tmp_path / "prepared"
    shutil.copytree(prepared_smoke, bad)
    train = (bad / "ner" / "train.jsonl").read_text().splitlines()
    first = json.loads(train[0])
    # An invalid IOB2 sequence and an unknown tag in train, a train sentence copied into test.
    broken = {"tokens": ["the", "York"], "tags": ["O", "I-geo-loc"]}
    unknown = {"tokens": ["Zed"], "tags": ["B-city"]}
    (bad / "ner" / "train.jsonl").write_text(
        "\n".join([*train, json.dumps(broken), json.dumps(unknown)]) + "\n"
    )
    with (bad / "ner" / "test.jsonl").open("a") as fh:
        fh.write(json.dumps(first) + "\n")
    failed = failures(run_gate(bad, gate_cfg))
    by_kind = {(f["check"], f["expectation"], f["kwargs"].get("column")): f for f in failed}
    iob = by_kind[("ner_train", "expect_column_values_to_be_in_set", "iob2_valid")]
    assert iob["unexpected_count"] == 1
    tags = by_kind[("ner_tags", "expect_column_values_to_be_in_set", "tag")]
    assert tags["examples"] == ["B-city"]
    assert ("ner_test", "expect_column_values_to_be_in_set", "in_train") in by_kind
    message = format_failures(failed)
    assert "ner_tags: expect_column_values_to_be_in_set on column 'tag'" in message
    assert "B-city" in message


@pytest.mark.slow  # a whole gate run: about 40 s on two shared cores
def test_label_share_and_row_count_bounds(prepared_smoke, tmp_path) -> None:
    cfg = smoke_cfg(
        "data.sentiment.label_share={negative:[0.9,1.0]}", "data.ner.min_rows.test=10000"
    )
    failed = failures(run_gate(prepared_smoke, cfg))
    checks = {(f["check"], f["expectation"]) for f in failed}
    assert ("sentiment_label_share", "expect_column_values_to_be_between") in checks
    assert ("ner_test", "expect_table_row_count_to_be_between") in checks


@pytest.mark.slow  # a whole gate run: about 20 s on two shared cores
def test_share_failure_says_which_label_has_which_share(prepared_smoke) -> None:
    cfg = smoke_cfg("data.sentiment.label_share={negative:[0.9,1.0]}")
    failed = [f for f in failures(run_gate(prepared_smoke, cfg)) if "label_share" in f["check"]]
    message = format_failures(failed)
    assert re.search(r"label 'negative' has share 0\.\d+, outside \[0\.9, 1\.0\]", message), message


def test_labels_and_shares_follow_the_label_map() -> None:
    from emergent.errors import ConfigError
    from emergent.tasks.checks import label_expectations

    # Numeric labels kept as they are (label_map=null labels=null): no set, no share check.
    cfg = smoke_cfg("data.sentiment.label_map=null", "data.sentiment.labels=null")
    sentiment = validate_config(cfg).data.task("sentiment")
    assert label_expectations("sentiment", sentiment, {"0", "1"}) == (None, {})
    # A label map with integer keys (from the command line): the labels are its values, and
    # the default shares of those labels are checked.
    cfg = smoke_cfg(
        "~data.sentiment.label_map",
        "+data.sentiment.label_map={0: negative, 1: positive}",
        "data.sentiment.labels=null",
    )
    sentiment = validate_config(cfg).data.task("sentiment")
    labels, shares = label_expectations("sentiment", sentiment, {"negative"})
    assert labels == ["negative", "positive"] and set(shares) == {"negative", "positive"}
    # Configured labels that do not hold the shares' labels: a config error naming the key.
    cfg = smoke_cfg("data.sentiment.labels=[0,1]")
    with pytest.raises(ConfigError, match=r"data\.sentiment\.label_share: label\(s\)"):
        label_expectations("sentiment", validate_config(cfg).data.task("sentiment"), {"0", "1"})


def test_label_map_with_integer_keys_maps_a_files_text_labels(tmp_path) -> None:
    from emergent.data import formats

    path = tmp_path / "sst.tsv"
    path.write_text("sentence\tlabel\ngood\t1\nbad\t0\n", encoding="utf-8")
    examples, _ = formats.read_labeled_text(
        path, "tsv", "sentence", "label", label_map={0: "negative", 1: "positive"}
    )
    assert [e["label"] for e in examples] == ["positive", "negative"]


@pytest.mark.slow  # a whole gate run (test_bad_prepared_data_fails_with_examples is the quick one)
def test_the_feedback_test_split_is_checked_like_any_other(
    prepared_smoke, gate_cfg, tmp_path
) -> None:
    """Ingest's `feedback_test.jsonl` (data.<task>.feedback) passes through the same checks:
    an unknown label and a text under min_chars fail on it by name."""
    from emergent.io import write_jsonl

    prepared = tmp_path / "prepared"
    shutil.copytree(prepared_smoke, prepared)
    rows = [{"text": "dull and far too long", "label": "negative"}, {"text": "x", "label": "meh"}]
    write_jsonl(prepared / "sentiment" / "feedback_test.jsonl", rows)
    failed = failures(run_gate(prepared, gate_cfg))
    found = {(f["check"], f["kwargs"].get("column")): f["unexpected_count"] for f in failed}
    assert found == {
        ("sentiment_feedback_test", "label"): 1,
        ("sentiment_feedback_test", "n_chars"): 1,
    }
