"""Serving runs on ONNX Runtime alone: predicting from an export package never loads torch
(nor transformers), and long NER inputs are predicted word by word through windows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Loads the session's exported smoke models (built by training).
pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = """
import json, sys
from emergent.serving.predictor import Predictor
from emergent.tasks.windows import owned_positions
long_text = " ".join(["Paris"] * 300)
out = {}
for task in ("ner", "sentiment"):
    p = Predictor(sys.argv[1] + "/" + task)
    out[task] = p.predict(["Barack Obama visited Paris", long_text])
    windows = p.encode([long_text])[0]
    owned = owned_positions([w.word_ids for w in windows])
    out[task + "_windows"] = [len(windows), sorted(w for ws in owned for _, w in ws)]
# the NER smoke model reads word shapes: the server computes them from the raw text itself
import numpy as np
from emergent.errors import PredictionError
p = Predictor(sys.argv[1] + "/ner")
enc = p.encode(["Barack OBAMA visited paris"])[0]
try:
    p.probabilities(enc)
    out["shapes_required"] = False
except PredictionError:
    out["shapes_required"] = True
with_shapes = p.probabilities(enc, ["Barack OBAMA visited paris"])[0]
ids = np.array([enc[0].ids], dtype=np.int64)
feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
feeds["word_shape_ids"] = np.zeros_like(ids)  # every token "no word"
zero = p.session.run(["logits"], feeds)[0][0]
zero = np.exp(zero) / np.exp(zero).sum(-1, keepdims=True)
out["shape_inputs"] = [i.name for i in p.session.get_inputs()]
out["shapes_matter"] = float(np.abs(with_shapes - zero).max())
# feedback is checked by the package's task definition (the IOB2 rule included), torch-free
ner = Predictor(sys.argv[1] + "/ner")
out["feedback"] = ner.task.check_labelled(
    {"tokens": ["Paris", "!"], "tags": ["O", "O"]}, ner.labels, 100
)
heavy = ("torch", "transformers", "lightning", "emergent.models")
heavy = sorted(m for m in heavy if m in sys.modules)
print(json.dumps({"heavy": heavy, "out": out}))
"""


def test_predictor_never_imports_torch(smoke_pretrained: Path, exported: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(smoke_pretrained / "models" / "export")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["heavy"] == [], f"serving loaded {report['heavy']}"
    ner, sentiment = report["out"]["ner"], report["out"]["sentiment"]
    assert ner[0]["text"] == "Barack Obama visited Paris" and "entities" in ner[0]
    n_windows, owned = report["out"]["ner_windows"]
    assert n_windows > 1 and owned == list(range(300)), "every word of a long text predicted"
    assert report["out"]["sentiment_windows"][0] == 1, "sequence tasks truncate to one window"
    assert set(sentiment[0]["probabilities"]) == {"negative", "positive"}
    assert sum(sentiment[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    out = report["out"]
    assert out["shape_inputs"] == ["input_ids", "attention_mask", "word_shape_ids"]
    assert out["shapes_required"], "a shape-reading model refuses windows without their text"
    assert out["shapes_matter"] > 1e-4, "the computed shapes change the model's output"
    assert out["feedback"] == {"tokens": ["Paris", "!"], "tags": ["O", "O"]}
