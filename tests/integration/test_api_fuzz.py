"""API fuzzing: the service against its own OpenAPI schema (schemathesis, property-based),
and raw bodies beyond what a schema-driven generator writes.

The service runs on 127.0.0.1 with the smoke exports of both tasks and a key holding the
predict and admin scopes (admin implies feedback). Schemathesis generates requests that fit
the schema and requests that break it (wrong types, missing fields, too many or too long
texts, unknown tasks), for every route: predict, feedback (labelled examples), reload. The
rule for every one: no 5xx, and every answer that is not 2xx carries a JSON `detail`. Bounded
(examples per operation, no per-example deadline on a shared CPU): well under a minute after
the models load.

Schemathesis writes valid UTF-8 JSON of modest depth; the 500s the service used to give came
from bodies outside that: lone surrogate escapes ("\\ud800", which tokenizers and the JSON
answer cannot encode), nesting deeper than json.loads recurses, numbers longer than Python
converts. `test_raw_bodies_get_no_5xx` generates those too, under the same rule, for predict
and feedback bodies alike (feedback examples of both shapes with awkward words and tags).
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from emergent.serving.app import create_app
from emergent.serving.keys import KeyStore
from emergent.serving.settings import Settings
from emergent.serving.slots import resolve_local
from tests.helpers import free_port, wait_ready

# Fuzzes the service over the session's exported smoke models (built by training).
pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLES = 120  # per operation; /admin/reload (it reloads both models) gets fewer
RELOAD_EXAMPLES = 12


def fuzz_settings(export_root: Path, tmp: Path) -> Settings:
    return Settings(
        sources={t: (lambda t=t: resolve_local(t, export_root)) for t in ("ner", "sentiment")},
        keys_file=tmp / "keys.json",
        store_path=tmp / "requests.db",
        warmup_batches=1,
        max_texts=8,  # small limits: the fuzzer reaches them
        max_chars=200,
        max_body_bytes=8192,
        rate_per_second=0.0,  # no 429s: every request reaches the body checks
    )


def service_schema() -> dict[str, Any]:
    """The OpenAPI schema of a service with these settings (building the app loads nothing:
    models load when it starts). The fixture checks the running service serves the same."""
    with tempfile.TemporaryDirectory() as tmp:
        return create_app(fuzz_settings(Path(tmp), Path(tmp))).openapi()


SCHEMA = service_schema()
schema = schemathesis.openapi.from_dict(SCHEMA)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], deterministic=True
)


@pytest.fixture(scope="module")
def service(
    exported: Path, smoke_pretrained: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(URL, API key) of the service on a free loopback port, ready."""
    import uvicorn

    tmp = tmp_path_factory.mktemp("fuzz")
    _, key = KeyStore.load(tmp / "keys.json").add(["predict", "admin"])
    app = create_app(fuzz_settings(smoke_pretrained / "models" / "export", tmp))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, timeout=60)
    assert httpx.get(f"{url}/openapi.json").json() == SCHEMA  # fuzzed against its own schema
    yield url, key
    server.should_exit = True
    thread.join(10)


def assert_answered(status: int, text: str, request: str) -> None:
    """The rule: no 5xx; an answer that is not 2xx is JSON with a `detail`."""
    assert status < 500, f"{request} -> {status} {text}"
    if not 200 <= status < 300:
        body = json.loads(text)
        assert isinstance(body, dict) and isinstance(body.get("detail"), str | list), (
            f"{request} -> {status} without a JSON detail: {text}"
        )


def check(case: Any, service: tuple[str, str]) -> None:
    url, key = service
    response = case.call(base_url=url, headers={"X-API-Key": key}, timeout=30)
    request = f"{case.method} {case.formatted_path} body={case.body!r}"
    assert_answered(response.status_code, response.text, request)


@schema.exclude(path="/admin/reload").parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,  # no example database written into the checkout
)
def test_no_request_gets_a_5xx_and_every_error_has_a_detail(
    case: Any, service: tuple[str, str]
) -> None:
    check(case, service)


@schema.include(path="/admin/reload").parametrize()
@settings(
    max_examples=RELOAD_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,  # no example database written into the checkout
)
def test_reload_gets_no_5xx(case: Any, service: tuple[str, str]) -> None:
    check(case, service)


LONE_SURROGATE = st.integers(0xD800, 0xDFFF).map(chr)
AWKWARD_TEXT = st.lists(st.one_of(st.characters(), LONE_SURROGATE), max_size=30).map("".join)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | AWKWARD_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(AWKWARD_TEXT, inner, max_size=3),
    max_leaves=12,
)
RAW_BODIES = st.one_of(
    # json.dumps escapes a lone surrogate as \udxxx: valid JSON text, not a valid character
    st.lists(AWKWARD_TEXT, max_size=10).map(lambda texts: json.dumps({"texts": texts}).encode()),
    JSON_VALUE.map(lambda value: json.dumps({"texts": value}).encode()),
    st.integers(1, 4000).map(lambda d: b'{"texts": ' + b"[" * d + b"]" * d + b"}"),
    st.integers(1, 6000).map(lambda n: b'{"texts": [' + b"9" * n + b"]}"),
    st.binary(max_size=300),
)
AWKWARD_LIST = st.lists(AWKWARD_TEXT, max_size=6)
EXAMPLE = st.fixed_dictionaries(
    {},
    optional={
        "text": st.one_of(AWKWARD_TEXT, JSON_VALUE),
        "label": st.one_of(st.sampled_from(["positive", "negative", "O"]), JSON_VALUE),
        "tokens": st.one_of(AWKWARD_LIST, JSON_VALUE),
        "tags": st.one_of(
            st.lists(st.sampled_from(["O", "B-person", "I-person", "I-x", ""]), max_size=6),
            JSON_VALUE,
        ),
        "request_id": st.one_of(AWKWARD_TEXT, JSON_VALUE),
    },
)
FEEDBACK_BODIES = st.one_of(
    st.lists(EXAMPLE, max_size=10).map(lambda examples: json.dumps({"examples": examples})),
    JSON_VALUE.map(lambda value: json.dumps({"examples": value})),
    st.integers(1, 4000).map(lambda d: '{"examples": ' + "[" * d + "]" * d + "}"),
).map(str.encode)


@given(
    route=st.sampled_from(["predict", "feedback"]),
    body=st.data(),
    task=st.sampled_from(["ner", "sentiment"]),
)
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_raw_bodies_get_no_5xx(
    service: tuple[str, str], route: str, body: st.DataObject, task: str
) -> None:
    url, key = service
    raw = body.draw(st.one_of(RAW_BODIES, FEEDBACK_BODIES) if route == "feedback" else RAW_BODIES)
    response = httpx.post(
        f"{url}/v1/{task}/{route}",
        content=raw,
        headers={"X-API-Key": key, "Content-Type": "application/json"},
        timeout=30,
    )
    assert_answered(response.status_code, response.text, f"POST /v1/{task}/{route} {raw[:200]!r}")
