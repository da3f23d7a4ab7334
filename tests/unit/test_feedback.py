"""Labelled feedback: `POST /v1/<task>/feedback` checks each example by its task's rules and
stores all of a request or none of it; `feedback export` writes it as data, split by content
(stub models, a real SQLite store, no training)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from emergent.config import Paths, compose
from emergent.errors import ConfigError, StageError
from emergent.io import read_jsonl, sha256_file
from emergent.serving.app import create_app
from emergent.serving.feedback import (
    FeedbackStore,
    FeedbackStoreError,
    NewFeedback,
    content_hash,
    in_test,
)
from emergent.serving.keys import KeyStore
from emergent.serving.store import RequestStore
from emergent.stages import run_stage
from tests.helpers import StubPredictor, stub_models, stub_settings, wait_ready

LIMITS = {"max_texts": 4, "max_chars": 50, "max_body_bytes": 4000}
TASKS = ("sentiment", "ner")


@pytest.fixture
def stubs(monkeypatch: pytest.MonkeyPatch) -> dict[str, StubPredictor]:
    return stub_models(monkeypatch, taggers=("ner",))


def start(tmp: Path) -> TestClient:
    return TestClient(create_app(stub_settings(tmp, TASKS, **LIMITS)))


@pytest.fixture
def client(tmp_path: Path, stubs: dict[str, StubPredictor]) -> Iterator[TestClient]:
    with start(tmp_path) as c:
        wait_ready(lambda p: c.get(p).status_code)
        yield c


def stored(tmp: Path, task: str | None = None) -> list[Any]:
    with closing(FeedbackStore(tmp / "requests.db")) as store:
        if task is None:
            return [store.count()]
        return store.examples(task)


def test_a_good_request_is_stored_as_sent_with_its_content_hash(
    client: TestClient, tmp_path: Path
) -> None:
    examples = [
        {"text": "  A fine film, Ada.  ", "label": "positive"},
        {"label": "negative", "text": "dull"},
    ]
    response = client.post("/v1/sentiment/feedback", json={"examples": examples})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["stored"] == 2 and body["version"] == "stub-1" and len(body["ids"]) == 2
    rows = stored(tmp_path, "sentiment")
    assert [r.id for r in rows] == body["ids"]
    assert [r.example for r in rows] == [
        {"text": "  A fine film, Ada.  ", "label": "positive"},  # as sent: not stripped
        {"text": "dull", "label": "negative"},
    ]
    canonical = '{"label":"positive","text":"  A fine film, Ada.  "}'
    assert rows[0].sha256 == hashlib.sha256(canonical.encode()).hexdigest()
    assert {(r.task, r.model_version, r.key_id, r.request_id) for r in rows} == {
        ("sentiment", "stub-1", "anonymous", None)
    }
    assert stored(tmp_path, "ner") == []


def test_a_token_example_may_name_the_prediction_it_corrects(
    client: TestClient, tmp_path: Path
) -> None:
    predicted = client.post(
        "/v1/ner/predict", json={"texts": ["Ada Lovelace"]}, headers={"X-Request-ID": "req-7"}
    )
    assert predicted.status_code == 200
    deadline = time.monotonic() + 10
    with closing(RequestStore(tmp_path / "requests.db")) as requests:
        while not requests.known_requests("ner", ["req-7"]) and time.monotonic() < deadline:
            time.sleep(0.02)  # the recorder writes off the hot path
        assert requests.known_requests("ner", ["req-7"]) == {"req-7"}
        assert requests.known_requests("sentiment", ["req-7"]) == set()
    example = {"tokens": ["Ada", "Lovelace"], "tags": ["B-person", "I-person"]}
    response = client.post(
        "/v1/ner/feedback", json={"examples": [{**example, "request_id": "req-7"}]}
    )
    assert response.status_code == 201, response.text
    (row,) = stored(tmp_path, "ner")
    assert (row.example, row.request_id) == (example, "req-7")
    assert row.sha256 == content_hash(example, ("tokens", "tags"))


GOOD_TEXT = {"text": "fine", "label": "positive"}
GOOD_TOKENS = {"tokens": ["Ada", "spoke"], "tags": ["B-person", "O"]}


@pytest.mark.parametrize(
    ("task", "body", "field", "detail"),
    [
        ("sentiment", {"examples": [{"text": "ok", "label": "meh"}]}, "examples[0].label",
         "unknown label 'meh'; the model's labels: negative, positive"),
        ("sentiment", {"examples": [GOOD_TEXT, {"text": "ok"}]}, "examples[1].label",
         "is missing"),
        ("sentiment", {"examples": [{"text": " \n", "label": "positive"}]}, "examples[0].text",
         "is empty"),
        ("sentiment", {"examples": [{"text": "", "label": "positive"}]}, "examples[0].text",
         "is empty"),
        ("sentiment", {"examples": [{"text": "x" * 51, "label": "positive"}]},
         "examples[0].text", "has 51 characters; at most 50"),
        ("sentiment", {"examples": [{"text": 5, "label": "positive"}]}, "examples[0].text",
         "must be a string, not int"),
        ("sentiment", {"examples": [GOOD_TOKENS]}, "examples[0].tokens",
         "not a field of a sequence classification example (text, label)"),
        ("sentiment", {"examples": [{**GOOD_TEXT, "why": "x"}]}, "examples[0].why",
         "is not a field of an example"),
        ("sentiment", {"examples": ["fine"]}, "examples[0]", "must be a JSON object"),
        ("ner", {"examples": [{"tokens": ["a", "b"], "tags": ["O", "I-person"]}]},
         "examples[0].tags", "tags[1] 'I-person' follows 'O': not IOB2"),
        ("ner", {"examples": [{"tokens": ["a"], "tags": ["I-person"]}]},
         "examples[0].tags", "tags[0] 'I-person' follows the start: not IOB2"),
        ("ner", {"examples": [GOOD_TOKENS, {"tokens": ["a", "b"], "tags": ["O"]}]},
         "examples[1].tags", "1 tags for 2 tokens"),
        ("ner", {"examples": [{"tokens": ["Oslo"], "tags": ["B-place"]}]}, "examples[0].tags",
         "tags[0] 'B-place' is not a tag of the model (O, B-person, I-person)"),
        ("ner", {"examples": [{"tokens": [], "tags": []}]}, "examples[0].tokens", "is empty"),
        ("ner", {"examples": [{"tokens": ["New York"], "tags": ["O"]}]}, "examples[0].tokens",
         "tokens[0] 'New York': one word, no whitespace"),
        ("ner", {"examples": [{"tokens": ["word"] * 11, "tags": ["O"] * 11}]},
         "examples[0].tokens", "has 54 characters; at most 50"),
        ("ner", {"examples": [{"tokens": "Ada", "tags": ["B-person"]}]}, "examples[0].tokens",
         "must be a list"),
        ("ner", {"examples": [GOOD_TEXT]}, "examples[0].text",
         "not a field of a token classification example (tokens, tags)"),
        ("sentiment", {"examples": [GOOD_TEXT] * 5}, "examples", "5 examples; at most 4"),
        ("sentiment", {"examples": []}, "examples", "examples is empty"),
        ("sentiment", {"texts": ["fine"]}, "examples", 'expected a JSON object {"examples"'),
        ("sentiment", {"examples": [GOOD_TEXT, {**GOOD_TEXT, "request_id": "nope"}]},
         "examples[1].request_id", "no prediction of sentiment with that id"),
        ("sentiment", {"examples": [{**GOOD_TEXT, "request_id": "r" * 129}]},
         "examples[0].request_id", "has 129 characters; at most 128"),
    ],
)  # fmt: skip
def test_a_bad_example_is_a_422_naming_it_and_nothing_is_stored(
    client: TestClient, tmp_path: Path, task: str, body: dict, field: str, detail: str
) -> None:
    response = client.post(f"/v1/{task}/feedback", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert detail in response.json()["detail"]
    if field != "examples":  # a field of one example: its line starts with its name
        assert response.json()["detail"].startswith(field)
    assert stored(tmp_path) == [0]


def test_the_feedback_scope_admin_implies_it_and_predict_does_not(
    tmp_path: Path, stubs: dict[str, StubPredictor]
) -> None:
    keys = KeyStore.load(tmp_path / "keys.json")
    _, predict_key = keys.add(["predict"])
    feedback_record, feedback_key = keys.add(["feedback"])
    admin_record, admin_key = keys.add(["admin"])
    url, body = "/v1/sentiment/feedback", {"examples": [GOOD_TEXT]}
    with start(tmp_path) as client:
        wait_ready(lambda p: client.get(p).status_code)
        missing = client.post(url, json=body)
        predict_only = client.post(url, json=body, headers={"X-API-Key": predict_key})
        bad_body_no_scope = client.post(url, json={}, headers={"X-API-Key": predict_key})
        assert stored(tmp_path) == [0]
        with_feedback = client.post(url, json=body, headers={"X-API-Key": feedback_key})
        with_admin = client.post(url, json=body, headers={"X-API-Key": admin_key})
        cannot_predict = client.post(
            "/v1/sentiment/predict", json={"texts": ["a"]}, headers={"X-API-Key": feedback_key}
        )
    assert missing.status_code == 401
    assert predict_only.status_code == 403
    assert "lacks the 'feedback' scope" in predict_only.json()["detail"]
    assert bad_body_no_scope.status_code == 403  # the caller's checks come before the body's
    assert (with_feedback.status_code, with_admin.status_code) == (201, 201)
    assert cannot_predict.status_code == 403
    rows = stored(tmp_path, "sentiment")
    assert [r.key_id for r in rows] == [feedback_record.id, admin_record.id]


def test_unknown_task_is_404(client: TestClient, tmp_path: Path) -> None:
    response = client.post("/v1/debate/feedback", json={"examples": [GOOD_TEXT]})
    assert response.status_code == 404 and "served tasks: sentiment, ner" in response.text
    assert stored(tmp_path) == [0]


def test_the_access_log_never_holds_an_example(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Ada lives at 12 Quiet Street"
    with caplog.at_level(logging.DEBUG):
        ok = client.post(
            "/v1/sentiment/feedback", json={"examples": [{"text": secret, "label": "positive"}]}
        )
        bad = client.post(
            "/v1/sentiment/feedback", json={"examples": [{"text": secret, "label": "meh"}]}
        )
    assert (ok.status_code, bad.status_code) == (201, 422)
    access = [r for r in caplog.records if r.name == "emergent.access"]
    assert [r.fields["status"] for r in access] == [201, 422]  # type: ignore[attr-defined]
    assert access[0].fields["batch_size"] == 1  # type: ignore[attr-defined]
    assert "Quiet Street" not in caplog.text
    assert all("Quiet Street" not in json.dumps(r.fields) for r in access)  # type: ignore[attr-defined]


def test_a_request_is_stored_all_or_nothing(tmp_path: Path) -> None:
    good = NewFeedback(1.0, "sentiment", "v1", None, "k", GOOD_TEXT, "ab" * 32)
    broken = NewFeedback(2.0, None, "v1", None, "k", GOOD_TEXT, "cd" * 32)  # type: ignore[arg-type]
    with closing(FeedbackStore(tmp_path / "requests.db")) as store:
        with pytest.raises(FeedbackStoreError, match="NOT NULL"):
            store.add([good, broken])
        assert store.count() == 0
        assert store.add([good, good]) == [1, 2]
        journal = store.conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert journal == "wal"


# --- export ----------------------------------------------------------------------------------


def export_cfg(tmp: Path, task: str = "sentiment", percent: int = 20) -> Any:
    return compose(
        [
            f"task={task}",
            f"serve.store.path={tmp / 'requests.db'}",
            f"feedback.dir={tmp / 'feedback'}",
            f"feedback.test_percent={percent}",
        ]
    )


def send(client: TestClient, examples: list[dict]) -> None:
    for start_at in range(0, len(examples), 4):
        chunk = examples[start_at : start_at + 4]
        response = client.post("/v1/sentiment/feedback", json={"examples": chunk})
        assert response.status_code == 201, response.text


def export(tmp: Path, capsys: pytest.CaptureFixture[str], **kw: Any) -> tuple[list, list, dict]:
    run_stage("feedback", export_cfg(tmp, **kw), Paths(tmp, tmp / "out"), argv=["export"])
    out = tmp / "feedback" / "sentiment"
    printed = capsys.readouterr().out.splitlines()
    assert printed[:2] == [
        f"wrote {len(read_jsonl(out / 'train.jsonl'))} examples to {out / 'train.jsonl'}",
        f"wrote {len(read_jsonl(out / 'test.jsonl'))} examples to {out / 'test.jsonl'}",
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sha256"] == {n: sha256_file(out / n) for n in ("train.jsonl", "test.jsonl")}
    return read_jsonl(out / "train.jsonl"), read_jsonl(out / "test.jsonl"), summary


def test_export_dedupes_splits_by_content_and_keeps_splits_as_feedback_grows(
    client: TestClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = ("positive", "negative")
    first = [{"text": f"film number {i}", "label": labels[i % 2]} for i in range(30)]
    send(client, [*first[:2], first[0], *first[2:]])  # first[0] again: a duplicate
    train, test, summary = export(tmp_path, capsys)
    assert train and test
    assert sorted(map(json.dumps, train + test)) == sorted(map(json.dumps, first))
    assert train + test != [] and all(set(e) == {"text", "label"} for e in train + test)
    for example in train + test:
        assert in_test(content_hash(example, ("text", "label")), 20) == (example in test)
    assert [e for e in first if e in train] == train  # arrival order
    assert summary == {
        **summary,
        "task": "sentiment",
        "received": 31,
        "duplicates": 1,
        "train": len(train),
        "test": len(test),
        "test_percent": 20,
        "last_feedback_id": 31,
    }

    more = [{"text": f"another film {i}", "label": "positive"} for i in range(30)]
    send(client, [*more, first[5]])
    train2, test2, summary2 = export(tmp_path, capsys)
    assert train2[: len(train)] == train and test2[: len(test)] == test  # nothing moved
    assert len(train2) + len(test2) == 60
    assert (summary2["duplicates"], summary2["last_feedback_id"]) == (2, 62)


def test_export_says_so_when_there_is_no_feedback_or_no_such_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = Paths(tmp_path, tmp_path / "out")
    run_stage("feedback", export_cfg(tmp_path), paths, argv=["export"])
    assert capsys.readouterr().out == (
        f"no feedback for task sentiment: no request store at {tmp_path / 'requests.db'} yet\n"
    )
    FeedbackStore(tmp_path / "requests.db").close()
    run_stage("feedback", export_cfg(tmp_path), paths, argv=["export"])
    assert capsys.readouterr().out == (
        f"no feedback for task sentiment in {tmp_path / 'requests.db'}\n"
    )
    assert not (tmp_path / "feedback").exists()
    with pytest.raises(ConfigError, match="unknown task 'nosuch'"):
        run_stage("feedback", export_cfg(tmp_path, task="nosuch"), paths, argv=["export"])
    with pytest.raises(StageError, match="feedback export task=<task>"):
        run_stage("feedback", export_cfg(tmp_path), paths, argv=[])
