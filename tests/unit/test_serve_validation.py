"""The predict body: one pydantic model validates it and documents it, every bad body gets a
4xx naming the problem, and the caller's checks come first (a stub model, no ONNX)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from emergent.serving.app import create_app
from emergent.serving.keys import KeyStore
from tests.helpers import StubPredictor, stub_models, stub_settings, wait_ready

LIMITS = {"max_texts": 4, "max_chars": 50, "max_body_bytes": 2000}
URL = "/v1/sentiment/predict"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def stubs(monkeypatch: pytest.MonkeyPatch) -> dict[str, StubPredictor]:
    return stub_models(monkeypatch)


@pytest.fixture
def client(tmp_path: Path, stubs: dict[str, StubPredictor]) -> Iterator[TestClient]:
    with TestClient(create_app(stub_settings(tmp_path, **LIMITS))) as c:
        wait_ready(lambda p: c.get(p).status_code)
        yield c


def test_a_good_body_reaches_the_model_and_its_answer_comes_back(
    client: TestClient, stubs: dict[str, StubPredictor]
) -> None:
    response = client.post(URL, json={"texts": ["a good film", "dull"], "extra": 1})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "task": "sentiment",
        "model": "emergent-sentiment",
        "version": "stub-1",
        "alias": None,
        "predictions": [
            {
                "text": "a good film",
                "label": "positive",
                "probabilities": {"positive": 0.75, "negative": 0.25},
            },
            {
                "text": "dull",
                "label": "negative",
                "probabilities": {"negative": 0.75, "positive": 0.25},
            },
        ],
    }
    assert stubs["sentiment"].calls[-1] == ["a good film", "dull"]


@pytest.mark.parametrize(
    ("content", "status", "detail", "field"),
    [
        (b'{"texts": ["a", ', 400, "malformed JSON: Expecting value at line 1 column 17", None),
        (b'{\n "texts": [1,]}', 400, "malformed JSON: Expecting value at line 2 column 14", None),
        (b'{"texts": ["\xff\xfe"]}', 400, "body is not valid UTF-8 (byte 12)", None),
        (b'["a"]', 422, 'expected a JSON object {"texts": ["...", ...]}', "texts"),
        (b"{}", 422, 'expected a JSON object {"texts": ["...", ...]}', "texts"),
        (b"", 422, 'expected a JSON object {"texts": ["...", ...]}', "texts"),
        (b"null", 422, 'expected a JSON object {"texts": ["...", ...]}', "texts"),
        (b'{"texts": "a"}', 422, "texts must be a list of strings", "texts"),
        (b'{"texts": {"a": 1}}', 422, "texts must be a list of strings", "texts"),
        (b'{"texts": []}', 422, "texts is empty: send at least one text", "texts"),
        (b'{"texts": ["a", 3]}', 422, "texts[1] must be a string, not int", "texts[1]"),
        (b'{"texts": ["a", null]}', 422, "texts[1] must be a string, not NoneType", "texts[1]"),
        (b'{"texts": ["a", "  "]}', 422, "texts[1] is empty", "texts[1]"),
        (b'{"texts": [""]}', 422, "texts[0] is empty", "texts[0]"),
        (
            b'{"texts": ["\\ud800"]}',
            422,
            "texts[0] is not valid Unicode (a lone surrogate escape)",
            "texts[0]",
        ),
        (
            json.dumps({"texts": ["x" * 51]}).encode(),
            422,
            "texts[0] has 51 characters; at most 50",
            "texts[0]",
        ),
        (json.dumps({"texts": ["a"] * 5}).encode(), 422, "5 texts; at most 4 per request", "texts"),
        (
            json.dumps({"texts": ["a" * 40] * 60}).encode(),
            413,
            "body of 2651 bytes exceeds 2000",
            None,
        ),
    ],
)
def test_bad_bodies_get_a_4xx_naming_the_problem(
    client: TestClient,
    stubs: dict[str, StubPredictor],
    content: bytes,
    status: int,
    detail: str,
    field: str | None,
) -> None:
    response = client.post(URL, content=content, headers=JSON)
    assert response.status_code == status, response.text
    assert response.json() == ({"detail": detail, "field": field} if field else {"detail": detail})
    assert stubs["sentiment"].calls == []  # nothing reached the model


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b'{"texts": ' + b"[" * 5000 + b"]" * 5000 + b"}", "malformed JSON: nested too deeply"),
        (b'{"texts": [' + b"1" * 5000 + b"]}", "malformed JSON: a number with too many digits"),
    ],
)
def test_json_the_parser_cannot_take_apart_is_a_400_saying_why(
    tmp_path: Path, stubs: dict[str, StubPredictor], content: bytes, detail: str
) -> None:
    """These were 500 "internal error" (RecursionError, ValueError out of json.loads)."""
    settings = stub_settings(tmp_path, max_body_bytes=20000)
    with TestClient(create_app(settings)) as client:
        wait_ready(lambda p: client.get(p).status_code)
        response = client.post(URL, content=content, headers=JSON)
    assert response.status_code == 400 and response.json() == {"detail": detail}


def test_unknown_routes_and_methods_answer_with_a_json_detail(client: TestClient) -> None:
    assert client.get("/nope").json() == {"detail": "Not Found"}
    assert client.get(URL).status_code == 405 and client.get(URL).json()["detail"]


def test_a_streamed_body_over_the_limit_is_413(client: TestClient) -> None:
    """No Content-Length (chunked): the limit holds while the body is read."""

    def chunks() -> Iterator[bytes]:
        yield b'{"texts": ["'
        for _ in range(30):
            yield b"a" * 100

    response = client.post(URL, content=chunks(), headers=JSON)
    assert response.status_code == 413 and response.json() == {"detail": "body exceeds 2000 bytes"}


def test_a_body_that_is_not_json_by_content_type_is_told_so(client: TestClient) -> None:
    response = client.post(URL, content=b'{"texts": ["a"]}', headers={"Content-Type": "text/plain"})
    assert response.status_code == 422
    assert response.json()["detail"].endswith("(send it as Content-Type: application/json)")
    # no Content-Type at all is read as JSON, as before
    assert client.post(URL, content=b'{"texts": ["a"]}').status_code == 200


def test_the_caller_is_checked_before_the_body(
    tmp_path: Path, stubs: dict[str, StubPredictor]
) -> None:
    """Unknown task, then key, then body: a caller without a key learns nothing about bodies."""
    keys = KeyStore.load(tmp_path / "keys.json")
    _, key = keys.add(["predict"])
    with TestClient(create_app(stub_settings(tmp_path, **LIMITS))) as client:
        wait_ready(lambda p: client.get(p).status_code)
        for content in (b'{"texts": [', b'{"texts": []}', b"\xff", b"x" * 3000):
            anonymous = client.post(URL, content=content, headers=JSON)
            assert anonymous.status_code == 401, (content[:20], anonymous.text)
            unknown = client.post("/v1/nope/predict", content=content, headers=JSON)
            assert unknown.status_code == 404, (content[:20], unknown.text)
            assert "served tasks: sentiment" in unknown.json()["detail"]
            keyed = client.post(URL, content=content, headers={**JSON, "X-API-Key": key})
            assert keyed.status_code in (400, 413, 422), (content[:20], keyed.text)
        ok = client.post(URL, json={"texts": ["good"]}, headers={"X-API-Key": key})
        assert ok.status_code == 200 and ok.json()["predictions"][0]["label"] == "positive"


def test_one_model_validates_and_documents_the_body(client: TestClient) -> None:
    """The schema the docs show is the model that validates, with this service's limits."""
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/{task}/predict"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"]
    assert body["required"] is True and ref == "#/components/schemas/PredictRequest"
    texts = schema["components"]["schemas"]["PredictRequest"]["properties"]["texts"]
    assert (texts["minItems"], texts["maxItems"]) == (1, 4)
    assert (texts["items"]["minLength"], texts["items"]["maxLength"]) == (1, 50)


def test_a_failing_model_is_a_500_with_a_json_detail(client: TestClient) -> None:
    """A broken model is the one internal error left: logged, answered with a JSON detail."""
    response = client.post(URL, json={"texts": ["this will fail"]})
    assert response.status_code == 500 and response.json() == {"detail": "internal error"}
