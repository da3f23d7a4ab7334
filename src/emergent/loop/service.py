"""Ask the running service to reload a task and wait until it serves the expected version.

`POST /admin/reload?task=<t>` re-resolves the alias and swaps the model in whole (the
previous one keeps answering until then, and stays on a failed load), so there is never a
service without a model; `/v1/models` then says which version answers.
"""

from __future__ import annotations

import logging
import time

import httpx

from emergent.errors import StageError

log = logging.getLogger(__name__)


def served_version(client: httpx.Client, task: str) -> str | None:
    """The version `/v1/models` reports for `task` (None: the task is not served)."""
    answer = client.get("/v1/models")
    answer.raise_for_status()
    for model in answer.json().get("models", []):
        if model.get("task") == task:
            return str(model.get("version"))
    return None


def reload_and_wait(
    url: str, admin_key: str, task: str, expected: str, timeout_s: float, interval_s: float
) -> str | None:
    """Reload `task` and poll until the service reports `expected`; returns the version it
    served before. Any failure is a StageError saying what the service answered."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, timeout=min(timeout_s, 30.0)) as client:
        try:
            before = served_version(client, task)
            answer = client.post(
                "/admin/reload", params={"task": task}, headers={"X-API-Key": admin_key}
            )
        except httpx.HTTPError as err:
            raise StageError(f"service at {url}: {err}") from err
        if answer.status_code != 200:
            raise StageError(
                f"service at {url}: POST /admin/reload answered {answer.status_code}: "
                f"{answer.text[:300]}"
            )
        now: str | None = before
        while True:
            try:
                now = served_version(client, task)
            except httpx.HTTPError as err:
                log.warning("polling %s/v1/models: %s", url, err)
            if now == expected:
                log.info("service at %s serves %s version %s (was %s)", url, task, now, before)
                return before
            if time.monotonic() >= deadline:
                raise StageError(
                    f"service at {url} still reports {task} version {now} after "
                    f"loop.reload_timeout_s={timeout_s}, not the new champion {expected}"
                )
            time.sleep(interval_s)
