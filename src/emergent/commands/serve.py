"""Command `serve`: the inference service under uvicorn (`python -m emergent serve`).

Binds serve.host:serve.port (127.0.0.1 by default) and refuses any other host while the keys
file holds no key. Exits non-zero with one line when a model package is missing or broken.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from emergent.config import Paths, project_root
from emergent.errors import StageError
from emergent.schema import Settings

log = logging.getLogger(__name__)


def run(cfg: DictConfig, paths: Paths, *, settings: Settings) -> None:
    import uvicorn

    from emergent.io import under
    from emergent.serving import logs
    from emergent.serving.app import create_app
    from emergent.serving.keys import KeyFileError, KeyStore
    from emergent.serving.settings import build, is_loopback, server_stack
    from emergent.serving.slots import ModelLoadError

    serve = settings.serve
    root = paths.input_dir if paths.input_dir else project_root()
    host = serve.host
    try:
        keys = KeyStore.load(under(root, serve.keys_file))
    except KeyFileError as err:
        raise StageError(str(err)) from err
    if not is_loopback(host) and not keys.enabled:
        raise StageError(
            f"serve.host={host} is not loopback and {keys.path} holds no API key: add one with "
            "`python -m emergent keys add --scope predict` (or bind 127.0.0.1)"
        )
    failure: list[str] = []
    server: uvicorn.Server | None = None

    def fatal(message: str) -> None:
        failure.append(message)
        if server is not None:
            server.should_exit = True

    try:
        service = build(serve, settings.tasks.names(), root, on_fatal=fatal)
    except ModelLoadError as err:
        raise StageError(str(err)) from err
    logs.configure(serve.log_level)
    app = create_app(service)
    config = uvicorn.Config(
        app, host=host, port=serve.port, log_config=None, access_log=False, workers=1
    )
    server = uvicorn.Server(config)
    log.info(
        "serving %s on http://%s:%s (%s)",
        ", ".join(service.sources),
        host,
        serve.port,
        ", ".join(f"{k} {v}" for k, v in server_stack().items()),
    )
    server.run()
    if failure:
        raise StageError(failure[0])
