"""The try-it page at `/` in a real headless Chromium (the `browser` fixture of conftest: a
skip where the browser is absent, `make browser-deps` installs it; a failure under CI)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from emergent.serving.app import create_app
from emergent.serving.settings import Settings
from emergent.serving.slots import resolve_local
from tests.helpers import free_port, wait_ready

# A browser against a server of the session's exported smoke models.
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(exported: Path, smoke_pretrained: Path, tmp_path_factory) -> Iterator[str]:
    import uvicorn

    tmp = tmp_path_factory.mktemp("browser")
    export_root = smoke_pretrained / "models" / "export"
    settings = Settings(
        sources={t: (lambda t=t: resolve_local(t, export_root)) for t in ("ner", "sentiment")},
        keys_file=tmp / "keys.json",
        store_path=tmp / "requests.db",
        warmup_batches=1,
    )
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, timeout=30, interval=0.1)
    yield url
    srv.should_exit = True
    thread.join(10)


# `browser` first: without one the test skips (or fails, under CI) before the costly server.
def test_page_predicts_each_task_and_highlights_entities(browser, server: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 20)
    browser.get(server + "/")
    wait.until(ec.presence_of_element_located((By.ID, "task-sentiment")))
    assert browser.find_element(By.ID, "task-ner").get_attribute("data-kind") == "entities"

    browser.find_element(By.ID, "go-sentiment").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#result-sentiment .bar")))
    bars = browser.find_elements(By.CSS_SELECTOR, "#result-sentiment .bar")
    api = httpx.post(
        f"{server}/v1/sentiment/predict",
        json={"texts": [browser.find_element(By.ID, "text-sentiment").get_property("value")]},
    ).json()["predictions"][0]
    assert {b.get_attribute("data-label") for b in bars} == set(api["probabilities"])
    label = browser.find_element(By.CSS_SELECTOR, "#result-sentiment .label").text
    assert label == api["label"]

    text = "Barack Obama visited Paris"
    area = browser.find_element(By.ID, "text-ner")
    area.clear()
    area.send_keys(text)
    browser.find_element(By.ID, "go-ner").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#result-ner .entities")))
    shown = browser.find_element(By.CSS_SELECTOR, "#result-ner .entities")
    api = httpx.post(f"{server}/v1/ner/predict", json={"texts": [text]}).json()
    marks = shown.find_elements(By.TAG_NAME, "mark")
    assert [m.get_attribute("data-type") for m in marks] == [
        e["type"] for e in api["predictions"][0]["entities"]
    ]

    # The highlighting itself, on known entities (the smoke model's guesses may be empty).
    html = browser.execute_script(
        "return renderEntities(arguments[0], arguments[1]).outerHTML;",
        text,
        [
            {"start": 21, "end": 26, "type": "geo-loc", "score": 0.8},
            {"start": 0, "end": 12, "type": "person", "score": 0.9},
        ],
    )
    assert '<mark data-type="person"' in html and ">Barack Obama<span" in html
    assert '<mark data-type="geo-loc"' in html and ">Paris<span" in html
    assert " visited " in html
