"""Comparing runs in the MLflow UI, the way users are meant to: `mlflow ui` on loopback,
a task's experiment in the model-training view, two training runs ticked, Compare.

The store is built through `stage_run` and `Tracker` (what the stages call) without training,
so the test stays within seconds apart from the server's start.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pytest

from emergent.tracking import stage_run
from tests.browser.conftest import mlflow_ui, wait_for

RUN_NAMES = ("finetune ner · tiny_bert · exp-lr-a", "finetune ner · tiny_bert · exp-lr-b")


def populate(cfg, prepared: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Two trained-and-evaluated runs in experiment `ner`; returns its id."""
    for name, val, test in (("exp-lr-a", 0.41, 0.38), ("exp-lr-b", 0.52, 0.47)):
        monkeypatch.setenv("DVC_EXP_NAME", name)
        with stage_run(cfg, "finetune", "ner", extra_tags={"task": "ner"}) as train:
            train.log_metrics({"val_f1": val, "best_val": val})
        with stage_run(cfg, "evaluate", "ner", extra_tags={"task": "ner"}) as evaluate:
            evaluate.log_metrics({"test_f1": test})
            evaluate.log_datasets(prepared, "ner", ["test"])
            evaluate.log_to_run(
                train.run_id,
                {"test_f1": test},
                splits=(prepared, "ner", ("train", "validation", "test")),
            )
    return mlflow.get_experiment_by_name("ner").experiment_id


# slow: `mlflow ui` alone takes 20-40 s to start on 2 busy cores (CI runs it: `.ci/run`)
@pytest.mark.slow
def test_one_click_compare_of_trained_models(
    browser, cfg, prepared_smoke: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from selenium.webdriver.common.by import By

    experiment = populate(cfg, prepared_smoke, monkeypatch)
    shots = Path(os.environ.get("EMERGENT_SCREENSHOTS", tmp_path))
    db = Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"))
    with mlflow_ui(db, tmp_path / "mlartifacts") as url:
        browser.get(f"{url}/#/experiments/{experiment}/runs?workflowType=machine_learning")
        wait_for(browser, f"document.body.innerText.includes({RUN_NAMES[1]!r})", 40)
        text = browser.execute_script("return document.body.innerText")
        assert all(name in text for name in RUN_NAMES)
        assert "ner/train" in text and "ner/test" in text  # the Dataset column
        browser.save_screenshot(str(shots / "mlflow_runs.png"))

        for row in browser.find_elements(By.CSS_SELECTOR, "[role=row]"):
            boxes = row.find_elements(By.CSS_SELECTOR, "input[type=checkbox]")
            if "finetune ner" in row.text and boxes:
                boxes[0].click()
        compare = [b for b in browser.find_elements(By.TAG_NAME, "button") if b.text == "Compare"]
        assert compare, "no Compare button after ticking two runs"
        compare[0].click()
        wait_for(browser, "document.body.innerText.includes('Comparing 2 Runs')", 30)
        wait_for(browser, "document.body.innerText.includes('test_f1')", 20)
        text = browser.execute_script("return document.body.innerText")
        # One row per trained model: its validation AND test figures side by side.
        assert "val_f1" in text and "test_f1" in text
        assert all(name in text for name in RUN_NAMES)
        browser.save_screenshot(str(shots / "mlflow_compare.png"))
        metric = browser.find_elements(By.XPATH, "//*[normalize-space(text())='test_f1']")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", metric[-1])
        browser.save_screenshot(str(shots / "mlflow_compare_metrics.png"))
