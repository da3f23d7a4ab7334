"""MLflow pyfunc wrapper around the int8 ONNX predictor, for the registry and `mlflow models
serve`. Input: a DataFrame (or list) with a `text` column; output: one JSON object per text."""

from __future__ import annotations

from typing import Any

from mlflow.pyfunc.model import PythonModel


class OnnxTaskModel(PythonModel):
    def load_context(self, context: Any) -> None:
        from pathlib import Path

        from emergent.serving.predictor import Predictor

        self.predictor = Predictor(Path(context.artifacts["export_dir"]))

    # No type hints here on purpose: MLflow would try to infer a schema from them.
    def predict(self, context, model_input, params=None):
        if hasattr(model_input, "columns"):
            texts = model_input["text"].astype(str).tolist()
        elif isinstance(model_input, dict):
            texts = list(model_input["text"])
        else:
            texts = [str(t) for t in model_input]
        return self.predictor.predict(texts)
