"""API fuzzing: the service against its own OpenAPI schema (schemathesis, property-based).

The service runs on 127.0.0.1 with the smoke exports of both tasks and a key holding both
scopes. Schemathesis generates requests that fit the schema and requests that break it
(wrong types, missing fields, too many or too long texts, unknown tasks). The rule for every
one: no 5xx, and every answer that is not 2xx carries a JSON `detail`. Bounded (examples per
operation, no per-example deadline on a shared CPU): well under a minute after the models load.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from emergent.serving.app import create_app
from emergent.serving.keys import KeyStore
from emergent.serving.models import resolve_local
from emergent.serving.settings import Settings
from tests.helpers import free_port, wait_ready

pytestmark = pytest.mark.integration

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


def check(case: Any, service: tuple[str, str]) -> None:
    url, key = service
    response = case.call(base_url=url, headers={"X-API-Key": key}, timeout=30)
    request = f"{case.method} {case.formatted_path} body={case.body!r}"
    assert response.status_code < 500, f"{request} -> {response.status_code} {response.text}"
    if not 200 <= response.status_code < 300:
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("detail"), str | list), (
            f"{request} -> {response.status_code} without a JSON detail: {response.text}"
        )


@schema.exclude(path="/admin/reload").parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
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
)
def test_reload_gets_no_5xx(case: Any, service: tuple[str, str]) -> None:
    check(case, service)
