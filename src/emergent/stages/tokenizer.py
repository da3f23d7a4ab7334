"""Stage `tokenizer`: train a WordPiece tokenizer on the corpus, or take the backbone's own."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from emergent.config import Paths
from emergent.data.layout import corpus_path, read_corpus
from emergent.io import atomic_dir
from emergent.models.backbone import build_tokenizer
from emergent.schema import Settings

log = logging.getLogger(__name__)


def run(cfg: DictConfig, paths: Paths, *, settings: Settings) -> None:
    train = settings.model.tokenizer.train
    corpus = corpus_path(paths.inp(settings.data.prepared_dir), "train")
    texts = read_corpus(corpus) if train else []
    tokenizer = build_tokenizer(settings.model, texts)
    with atomic_dir(paths.out("models", "tokenizer")) as tmp:
        tokenizer.save_pretrained(str(tmp))
    how = "trained on the corpus" if train else "from the backbone"
    log.info("tokenizer (%s): %d tokens, %s", settings.model.name, len(tokenizer), how)
