"""How the app is put together: module-level routes, typed per service (its served tasks, its
limits), whose docstrings stay out of the OpenAPI schema. Building an app loads no model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from emergent.serving.app import create_app
from emergent.serving.routes import predict
from emergent.serving.routes.signatures import typed
from tests.helpers import stub_settings


def schema(tmp: Path, tasks: tuple[str, ...], max_texts: int) -> dict[str, Any]:
    tmp.mkdir()
    return create_app(stub_settings(tmp, tasks=tasks, max_texts=max_texts)).openapi()


def test_each_app_documents_its_own_tasks_and_limits(tmp_path: Path) -> None:
    """Two apps in one process: the routes are shared functions, their types are not."""
    one = schema(tmp_path / "one", ("sentiment",), 4)
    two = schema(tmp_path / "two", ("ner", "debate"), 9)
    for spec, tasks, most in ((one, ["sentiment"], 4), (two, ["ner", "debate"], 9)):
        paths = spec["paths"]
        task = paths["/v1/{task}/predict"]["post"]["parameters"][0]
        reload = paths["/admin/reload"]["post"]["parameters"][0]
        assert (task["name"], task["in"], task["schema"]["enum"]) == ("task", "path", tasks)
        assert (reload["name"], reload["in"], reload["schema"]["enum"]) == ("task", "query", tasks)
        feedback = paths["/v1/{task}/feedback"]["post"]["parameters"][0]
        assert feedback["schema"]["enum"] == tasks
        schemas = spec["components"]["schemas"]
        assert schemas["PredictRequest"]["properties"]["texts"]["maxItems"] == most
        assert schemas["FeedbackRequest"]["properties"]["examples"]["maxItems"] == most


def test_route_docstrings_stay_out_of_the_schema(tmp_path: Path) -> None:
    """The docstrings say why to the code's reader; the schema's words are the summaries."""
    spec = schema(tmp_path / "app", ("sentiment",), 4)
    operations = [op for path in spec["paths"].values() for op in path.values()]
    assert len(operations) == 7 and predict.predict.__doc__
    assert [op for op in operations if "description" in op] == []
    assert spec["paths"]["/healthz"]["get"]["summary"] == "Alive"


def test_typed_names_a_parameter_the_route_lacks() -> None:
    with pytest.raises(TypeError, match="predict has no parameter texts"):
        typed(predict.predict, texts=list[str])
