"""The feedback store on a real PostgreSQL (the team setting, `serve.store.feedback_uri`):
the service stores there, a request is all or nothing, and `feedback export` reads it back.
Skips without PostgreSQL on a person's machine; fails under CI, which installs it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from emergent.config import Paths, compose
from emergent.io import read_jsonl
from emergent.serving.app import create_app
from emergent.serving.feedback import FeedbackStore, FeedbackStoreError, NewFeedback
from emergent.stages import run_stage
from tests.helpers import (
    NO_POSTGRES,
    postgres_bin,
    postgres_cluster,
    require,
    stub_models,
    stub_settings,
    wait_ready,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    require(NO_POSTGRES if postgres_bin() is None else None)
    with postgres_cluster() as uri:
        yield uri


@pytest.mark.slow  # starts a PostgreSQL cluster
def test_the_service_stores_feedback_in_postgresql_and_export_reads_it(
    postgres: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stub_models(monkeypatch, taggers=("ner",))
    settings = stub_settings(tmp_path, ("sentiment", "ner"), feedback_uri=postgres)
    sent = [
        {"tokens": ["Ada", "wrote"], "tags": ["B-person", "O"]},
        {"tokens": ["Grace", "Hopper", "ës"], "tags": ["B-person", "I-person", "O"]},
    ]
    with TestClient(create_app(settings)) as client:
        wait_ready(lambda p: client.get(p).status_code)
        ok = client.post("/v1/ner/feedback", json={"examples": sent})
        bad = client.post(
            "/v1/ner/feedback", json={"examples": [sent[0], {"tokens": ["x"], "tags": ["I-x"]}]}
        )
    assert ok.status_code == 201, ok.text
    assert bad.status_code == 422 and bad.json()["field"] == "examples[1].tags"
    with closing(sqlite3.connect(tmp_path / "requests.db")) as local:
        tables = {r[0] for r in local.execute("SELECT name FROM sqlite_master")}
    assert "predictions" in tables and "feedback" not in tables  # not in the SQLite file
    with closing(FeedbackStore(postgres)) as store:
        rows = store.examples("ner")
        assert [r.example for r in rows] == sent  # as sent
        assert [r.id for r in rows] == ok.json()["ids"]
        assert store.count() == 2

    cfg = compose(
        [
            "task=ner",
            f"serve.store.feedback_uri={postgres}",
            f"feedback.dir={tmp_path / 'feedback'}",
            "feedback.test_percent=0",
        ]
    )
    run_stage("feedback", cfg, Paths(tmp_path, tmp_path / "out"), argv=["export"])
    assert read_jsonl(tmp_path / "feedback" / "ner" / "train.jsonl") == sent
    assert read_jsonl(tmp_path / "feedback" / "ner" / "test.jsonl") == []
    assert "wrote 2 examples to" in capsys.readouterr().out


@pytest.mark.slow  # starts a PostgreSQL cluster
def test_postgresql_store_is_all_or_nothing_and_reconnects(postgres: str) -> None:
    good = NewFeedback(1.0, "debate", "v1", "req-1", "k1", {"text": "a", "label": "x"}, "0" * 64)
    broken = NewFeedback(2.0, None, "v1", None, "k1", {"text": "b", "label": "y"}, "1" * 64)  # type: ignore[arg-type]
    with closing(FeedbackStore(postgres)) as store:
        with pytest.raises(FeedbackStoreError, match="null value") as raised:
            store.add([good, broken])
        assert '"label": "y"' not in str(raised.value)  # the error never quotes an example
        assert store.count("debate") == 0
        store.conn.close()  # as a server restart would leave it
        (new_id,) = store.add([good])
        (row,) = store.examples("debate")
    assert (row.id, row.ts, row.task, row.model_version, row.request_id, row.key_id) == (
        new_id, 1.0, "debate", "v1", "req-1", "k1",
    )  # fmt: skip
    assert (row.example, row.sha256) == ({"text": "a", "label": "x"}, "0" * 64)


def test_an_unreachable_postgresql_is_one_clear_error(tmp_path: Path) -> None:
    from tests.helpers import free_port

    uri = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    with pytest.raises(FeedbackStoreError, match=r"feedback store postgresql://127\.0\.0\.1"):
        FeedbackStore(uri)
    with pytest.raises(FeedbackStoreError, match="use postgresql://"):
        FeedbackStore.open("mysql://x", tmp_path / "r.db")
