"""The service in-process (TestClient) on the smoke exports of both tasks."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from emergent.serving.app import create_app
from emergent.serving.feedback import FeedbackStore
from emergent.serving.keys import KeyStore
from emergent.serving.settings import Settings
from emergent.serving.slots import resolve_local
from emergent.serving.store import RequestStore
from tests.helpers import copy_sqlite, known_packages, wait_ready

# Serves the session's exported smoke models (built by training).
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def settings(
    root: Path, tmp: Path, export_root: Path | None = None, **overrides: object
) -> Settings:
    export_root = export_root or root / "models" / "export"
    values: dict = {
        "sources": {t: (lambda t=t: resolve_local(t, export_root)) for t in ("ner", "sentiment")},
        "keys_file": tmp / "keys.json",
        "store_path": tmp / "requests.db",
        "warmup_batches": 1,
        "max_texts": 4,
        "max_chars": 50,
        "max_body_bytes": 2000,
    }
    values.update(overrides)
    return Settings(**values)


def ready(client: TestClient, timeout: float = 30.0) -> None:
    wait_ready(lambda path: client.get(path).status_code, timeout=timeout)


@pytest.fixture(scope="module")
def root(exported: Path, smoke_pretrained: Path) -> Path:
    return smoke_pretrained


@pytest.fixture
def client(root: Path, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(root, tmp_path, rate_per_second=0))) as c:
        ready(c)
        yield c


@pytest.fixture(scope="module")
def known(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return known_packages(root / "models" / "export", tmp_path_factory.mktemp("known"))


def version(package: Path) -> str:
    return "sha256:" + hashlib.sha256((package / "model.int8.onnx").read_bytes()).hexdigest()[:12]


def test_predicts_every_task_with_model_version_and_offsets(
    root: Path, known: Path, tmp_path: Path
) -> None:
    with TestClient(create_app(settings(root, tmp_path, export_root=known))) as client:
        ready(client)
        models = client.get("/v1/models").json()["models"]
        ner = client.post("/v1/ner/predict", json={"texts": ["the great film is here", "hello"]})
        sentiment = client.post("/v1/sentiment/predict", json={"texts": ["a great film", "dull"]})
        assert client.get("/healthz").json() == {"status": "alive"}
        page = client.get("/").text
        assert "<script>" in page and "/docs" not in page
        assert "/v1/{task}/predict" in client.get("/openapi.json").json()["paths"]
    ner_labels = json.loads((known / "ner" / "labels.json").read_text())
    assert [(m["task"], m["kind"], m["labels"], m["version"]) for m in models] == [
        ("ner", "entities", ner_labels, version(known / "ner")),
        ("sentiment", "classes", ["negative", "positive"], version(known / "sentiment")),
    ]
    assert ner.json() == {
        "task": "ner",
        "model": "emergent-ner",
        "version": version(known / "ner"),
        "alias": None,
        "predictions": [
            {
                "text": "the great film is here",
                "entities": [
                    {"type": "person", "start": 4, "end": 14, "text": "great film", "score": 0.9}
                ],
            },
            {"text": "hello", "entities": []},
        ],
    }
    # softmax([1, 3]) and softmax([1, 0]), to 4 places
    assert sentiment.json()["predictions"] == [
        {
            "text": "a great film",
            "label": "positive",
            "probabilities": {"negative": 0.1192, "positive": 0.8808},
        },
        {
            "text": "dull",
            "label": "negative",
            "probabilities": {"negative": 0.7311, "positive": 0.2689},
        },
    ]


@pytest.mark.parametrize(
    ("content", "status", "needle"),
    [
        (b'{"texts": ["a", ', 400, "malformed JSON"),
        (b'{"texts": ["\xff\xfe"]}', 400, "UTF-8"),
        (b'["a"]', 422, "expected a JSON object"),
        (b'{"texts": "a"}', 422, "must be a list"),
        (b'{"texts": []}', 422, "empty"),
        (b'{"texts": ["a", 3]}', 422, "texts[1] must be a string"),
        (b'{"texts": ["a", "  "]}', 422, "texts[1] is empty"),
        (json.dumps({"texts": ["x" * 51]}).encode(), 422, "texts[0] has 51 characters"),
        (json.dumps({"texts": ["a"] * 5}).encode(), 422, "at most 4 per request"),
        (json.dumps({"texts": ["a" * 40] * 60}).encode(), 413, "exceeds 2000"),
    ],
)
def test_bad_requests_get_a_clear_4xx(
    client: TestClient, content: bytes, status: int, needle: str
) -> None:
    response = client.post(
        "/v1/sentiment/predict", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert needle in response.json()["detail"]


def test_unknown_task_is_404_naming_the_served_tasks(client: TestClient) -> None:
    response = client.post("/v1/nope/predict", json={"texts": ["a"]})
    assert response.status_code == 404 and "ner, sentiment" in response.json()["detail"]


def test_keys_scopes_rate_limit_and_logs(
    root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = KeyStore.load(tmp_path / "keys.json")
    predict_rec, predict_key = keys.add(["predict"])
    _, admin_key = keys.add(["admin"])
    app = create_app(settings(root, tmp_path, rate_per_second=0.5, rate_burst=2))
    with caplog.at_level(logging.INFO), TestClient(app) as client:
        ready(client)
        url, body = "/v1/sentiment/predict", {"texts": ["good"]}
        assert client.post(url, json=body).status_code == 401
        assert client.post(url, json=body, headers={"X-API-Key": "em_x_y"}).status_code == 401
        assert client.post(url, json=body, headers={"X-API-Key": admin_key}).status_code == 403
        assert client.post("/admin/reload", headers={"X-API-Key": predict_key}).status_code == 403
        ok = client.post(
            url, json=body, headers={"X-API-Key": predict_key, "X-Request-ID": "req-42"}
        )
        assert ok.status_code == 200 and ok.headers["X-Request-ID"] == "req-42"
        client.post(url, json=body, headers={"X-API-Key": predict_key})
        limited = client.post(url, json=body, headers={"X-API-Key": predict_key})
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    access = [r for r in caplog.records if r.name == "emergent.access"]
    entry = next(r.fields for r in access if r.fields["request_id"] == "req-42")
    assert entry["task"] == "sentiment" and entry["status"] == 200
    assert entry["key_id"] == predict_rec.id and entry["batch_size"] == 1
    everything = caplog.text + " ".join(json.dumps(r.fields) for r in access)
    assert predict_key not in everything and admin_key not in everything
    assert "good" not in json.dumps([r.fields for r in access])


def test_full_queue_is_503_with_retry_after(root: Path, tmp_path: Path) -> None:
    with TestClient(create_app(settings(root, tmp_path, max_queue=2))) as client:
        ready(client)
        response = client.post("/v1/ner/predict", json={"texts": ["a", "b", "c"]})
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"


def test_metrics_and_request_store_hold_features_not_text(root: Path, tmp_path: Path) -> None:
    secret = "Zyxwvut Qwerty lives at 12 Unique Street"
    with TestClient(create_app(settings(root, tmp_path))) as client:
        ready(client)
        for task in ("ner", "sentiment"):
            assert client.post(f"/v1/{task}/predict", json={"texts": [secret]}).status_code == 200
        deadline = time.monotonic() + 10
        store = RequestStore(tmp_path / "requests.db")
        while store.count() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        metrics = client.get("/metrics").text
    rows = list(store.rows())
    assert {r["task"] for r in rows} == {"ner", "sentiment"}
    for r in rows:
        assert r["n_chars"] == len(secret) and r["n_tokens"] > 0 and 0 <= r["unk_share"] <= 1
        assert 0 < r["confidence"] <= 1 and r["label"] and r["masked_text"] is None
    raw = (tmp_path / "requests.db").read_bytes()
    assert b"Zyxwvut" not in raw
    for name in (
        'emergent_requests_total{status="200",task="sentiment"} 1.0',
        "emergent_batch_size_bucket",
        "emergent_queue_wait_seconds_bucket",
        "emergent_tokens_per_text_bucket",
        "emergent_unknown_token_share_bucket",
        "emergent_prediction_confidence_bucket",
        "emergent_predicted_labels_total",
    ):
        assert name in metrics, name
    assert "Zyxwvut" not in metrics


def test_feedback_is_checked_against_each_exported_task_definition(
    client: TestClient, tmp_path: Path
) -> None:
    """The rules come from the export package (its task definition and labels), not from
    the stub models of the unit tests."""
    ner_labels = client.get("/v1/models").json()["models"][0]["labels"]
    tag = next(label for label in ner_labels if label.startswith("B-"))
    ner = client.post(
        "/v1/ner/feedback", json={"examples": [{"tokens": ["Paris", "."], "tags": [tag, "O"]}]}
    )
    sentiment = client.post(
        "/v1/sentiment/feedback", json={"examples": [{"text": "fine", "label": "positive"}]}
    )
    not_iob2 = client.post(
        "/v1/ner/feedback",
        json={"examples": [{"tokens": ["Paris"], "tags": ["I-" + tag[2:]]}]},
    )
    unknown = client.post(
        "/v1/sentiment/feedback", json={"examples": [{"text": "fine", "label": "B-person"}]}
    )
    assert (ner.status_code, sentiment.status_code) == (201, 201), (ner.text, sentiment.text)
    assert not_iob2.status_code == 422 and not_iob2.json()["field"] == "examples[0].tags"
    assert unknown.status_code == 422 and unknown.json()["field"] == "examples[0].label"
    with closing(FeedbackStore(tmp_path / "requests.db")) as store:
        assert [r.example for r in store.examples("ner")] == [
            {"tokens": ["Paris", "."], "tags": [tag, "O"]}
        ]
        assert store.count() == 2


def test_reload_under_load_fails_no_request(client: TestClient) -> None:
    service = client.app.state.service
    before = service.slots["sentiment"].current
    statuses: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            r = client.post("/v1/sentiment/predict", json={"texts": ["a good film", "bad"]})
            statuses.append(r.status_code)

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    for w in workers:
        w.start()
    time.sleep(0.3)
    for _ in range(2):
        reply = client.post("/admin/reload", params={"task": "sentiment"})
        assert reply.status_code == 200, reply.text
    time.sleep(0.3)
    stop.set()
    for w in workers:
        w.join()
    assert service.slots["sentiment"].current is not before  # swapped
    assert len(statuses) > 10 and set(statuses) == {200}


def test_registry_alias_serves_the_champion_and_reload_follows_the_alias(
    root: Path, exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from emergent.serving.slots import resolve_registry

    db = tmp_path / "registry.db"  # a private copy: this test moves aliases
    copy_sqlite(exported, db)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    client_ = mlflow.MlflowClient()
    name = "emergent-sentiment"
    first = client_.get_model_version_by_alias(name, "candidate")
    client_.set_registered_model_alias(name, "champion", first.version)
    downloads = tmp_path / "downloads"
    source = {"sentiment": lambda: resolve_registry("sentiment", "champion", downloads)}
    with TestClient(create_app(settings(root, tmp_path, sources=source))) as client:
        ready(client)
        body = client.post("/v1/sentiment/predict", json={"texts": ["a fine film"]}).json()
        assert (body["model"], body["version"], body["alias"]) == (
            name,
            str(first.version),
            "champion",
        )
        assert body["predictions"][0]["label"] in body["predictions"][0]["probabilities"]
        # A new version becomes champion: /admin/reload re-resolves the alias and swaps it in.
        second = client_.create_model_version(name, first.source, run_id=first.run_id)
        client_.set_registered_model_alias(name, "champion", second.version)
        assert client.post("/admin/reload", params={"task": "sentiment"}).status_code == 200
        body = client.post("/v1/sentiment/predict", json={"texts": ["a fine film"]}).json()
        assert body["version"] == str(second.version) != str(first.version)
        served = client.get("/v1/models").json()["models"]
        assert [(m["task"], m["version"], m["alias"]) for m in served] == [
            ("sentiment", str(second.version), "champion")
        ]
