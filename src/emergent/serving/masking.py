"""Masking of personal data with Microsoft Presidio, fully offline.

No spaCy model: Presidio's no-op NLP engine, its pattern recognizers (e-mail, phone, URL, IP,
credit card with the Luhn check) and our own NER model as a custom EntityRecognizer for people
and places. The e-mail recognizer's public-suffix check uses tldextract's bundled snapshot with
no suffix-list URLs and no cache directory, so it never touches the network.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Entities = Callable[[list[str]], list[list[dict[str, Any]]]]


def offline_tld_extractor() -> Any:
    import tldextract

    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)


def build_analyzer(entities: Entities | None, entity_map: Mapping[str, str], min_score: float):
    from presidio_analyzer import (
        AnalyzerEngine,
        EntityRecognizer,
        RecognizerRegistry,
        RecognizerResult,
    )
    from presidio_analyzer.nlp_engine import NoOpNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UrlRecognizer,
    )

    extractor = offline_tld_extractor()

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return extractor(pattern_text).fqdn != ""

    class ModelEntityRecognizer(EntityRecognizer):
        """People and places found by our own NER model (through the served predictor)."""

        def __init__(self, find: Entities, **kwargs: Any) -> None:
            self.find = find  # before the base class's __init__, which calls load()
            super().__init__(**kwargs)

        def load(self) -> None:
            pass

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None):
            results = []
            for ent in self.find([text])[0]:
                kind = entity_map.get(ent["type"])
                if kind and kind in entities and float(ent["score"]) >= min_score:
                    results.append(RecognizerResult(kind, ent["start"], ent["end"], ent["score"]))
            return results

    registry = RecognizerRegistry(supported_languages=["en"])
    for recognizer in (
        OfflineEmailRecognizer(),
        PhoneRecognizer(),
        UrlRecognizer(),
        IpRecognizer(),
        CreditCardRecognizer(),
    ):
        registry.add_recognizer(recognizer)
    if entities is not None:
        kinds = sorted(set(entity_map.values()))
        registry.add_recognizer(
            ModelEntityRecognizer(entities, supported_entities=kinds, name="emergent_ner")
        )
    engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    engine.load()
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])


class Masker:
    """`mask(text)` -> text with every detected span replaced by its placeholder."""

    def __init__(
        self,
        placeholders: Mapping[str, str],
        entities: Entities | None = None,
        entity_map: Mapping[str, str] | None = None,
        min_score: float = 0.5,
    ) -> None:
        from presidio_anonymizer import AnonymizerEngine
        from presidio_anonymizer.entities import OperatorConfig

        self.placeholders = dict(placeholders)
        self.analyzer = build_analyzer(entities, dict(entity_map or {}), min_score)
        self.anonymizer = AnonymizerEngine()
        self.operators = {
            kind: OperatorConfig("replace", {"new_value": value})
            for kind, value in self.placeholders.items()
        }
        self.operators["DEFAULT"] = OperatorConfig("replace", {"new_value": "<PII>"})

    def mask(self, text: str) -> str:
        found = self.analyzer.analyze(text, language="en", entities=list(self.placeholders))
        return self.anonymizer.anonymize(text, found, self.operators).text


def masking_worker(
    conf: dict[str, Any], ner_export_dir: str | None, db_path: str, inbox: Any
) -> None:
    """Process entry point: mask sampled texts and write them into the request store.

    Runs in its own process so Presidio (whose spaCy stack pulls in heavy imports) never
    loads into the serving process; raw text only ever travels through the pipe.
    """
    from emergent.serving.store import RequestStore

    entities = None
    if ner_export_dir:
        from emergent.serving.predictor import Predictor

        ner = Predictor(Path(ner_export_dir), threads=1)
        entities = lambda texts: [r["entities"] for r in ner.predict(texts)]  # noqa: E731
    masker = Masker(conf["placeholders"], entities, conf.get("entity_map"), conf["min_score"])
    store = RequestStore(Path(db_path))
    while (item := inbox.get()) is not None:
        row_id, text = item
        try:
            masked = masker.mask(text)
        except Exception:
            log.exception("masking failed for record %s; text dropped", row_id)
            continue
        with store.conn:
            store.conn.execute(
                "UPDATE predictions SET masked_text = ? WHERE id = ?", (masked, row_id)
            )
    store.close()


class MaskingProcess:
    """The masking worker as a child process fed through a bounded queue (full: dropped)."""

    def __init__(self, conf: dict[str, Any], ner_export_dir: Path | None, db_path: Path) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.inbox = ctx.Queue(maxsize=1000)
        self.process = ctx.Process(
            target=masking_worker,
            args=(conf, str(ner_export_dir) if ner_export_dir else None, str(db_path), self.inbox),
            name="emergent-masking",
            daemon=True,
        )
        self.process.start()

    def submit(self, row_id: int, text: str) -> bool:
        import queue

        try:
            self.inbox.put_nowait((row_id, text))
            return True
        except queue.Full:
            return False

    def stop(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(Exception):
            self.inbox.put_nowait(None)
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
