"""Service parts without models: keys, rate limits, batching, features, store, masking."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from pathlib import Path

import pytest

from emergent.serving.batching import MicroBatcher, Overloaded
from emergent.serving.features import output_features
from emergent.serving.keys import KeyFileError, KeyStore, digest
from emergent.serving.limits import RateLimiter, retry_after
from emergent.serving.store import RequestStore


def test_keys_are_stored_as_hashes_and_checked_by_scope(tmp_path: Path) -> None:
    store = KeyStore.load(tmp_path / "keys.json")
    assert not store.enabled
    record, key = store.add(["predict"])
    text = (tmp_path / "keys.json").read_text()
    assert key not in text and digest(key) in text
    assert (tmp_path / "keys.json").stat().st_mode & 0o777 == 0o600
    again = KeyStore.load(tmp_path / "keys.json")
    assert again.verify(key).id == record.id
    assert again.verify(key + "x") is None and again.verify(None) is None
    assert again.verify(key).scopes == ("predict",)
    again.revoke(record.id)
    assert KeyStore.load(tmp_path / "keys.json").verify(key) is None
    with pytest.raises(KeyFileError, match="no key with id"):
        again.revoke("nope")
    with pytest.raises(KeyFileError, match="unknown scope"):
        again.add(["root"])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(KeyFileError, match=r"bad\.json"):
        KeyStore.load(tmp_path / "bad.json")


def test_rate_limiter_allows_the_burst_then_says_when_to_retry() -> None:
    limiter = RateLimiter(rate=2.0, burst=3.0)
    assert [limiter.acquire("k", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire("k", now=0.0)
    assert wait == pytest.approx(0.5)
    assert retry_after(wait) == "1"
    assert limiter.acquire("other", now=0.0) == 0.0  # per key
    assert limiter.acquire("k", now=0.6) == 0.0  # refilled
    assert RateLimiter(rate=0, burst=1).acquire("k") == 0.0  # off


def test_batcher_collects_texts_across_requests_into_one_call() -> None:
    calls: list[list[str]] = []

    def predict(model: str, texts: list[str]) -> list[dict]:
        calls.append(list(texts))
        return [{"label": t.upper(), "model": model} for t in texts]

    async def scenario() -> list:
        batcher = MicroBatcher(lambda: "m1", predict, 8, max_wait_s=0.05, max_queue=20)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit([f"t{i}"]) for i in range(6)))
        with pytest.raises(Overloaded):
            await batcher.submit(["x"] * 21)
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert calls == [[f"t{i}" for i in range(6)]]  # one ORT call for six requests
    assert [r[0][0]["label"] for r in results] == [f"T{i}" for i in range(6)]
    assert results[0][0][1] == "m1"


def test_batcher_answers_a_lone_client_without_waiting_for_company() -> None:
    calls: list[list[str]] = []

    def predict(model: str, texts: list[str]) -> list[dict]:
        calls.append(list(texts))
        return [{"label": t} for t in texts]

    async def scenario() -> None:
        # max_wait 60 s: a batcher that waited for company would hit the 5 s timeout below.
        batcher = MicroBatcher(lambda: "m", predict, 8, max_wait_s=60.0, max_queue=20)
        batcher.start()
        for i in range(3):
            await asyncio.wait_for(batcher.submit([f"t{i}"]), timeout=5.0)
        await batcher.stop()

    asyncio.run(scenario())
    assert calls == [["t0"], ["t1"], ["t2"]]


def test_batcher_passes_predictor_errors_to_each_caller() -> None:
    """A batch that fails fails every request in it with the predictor's own error; the
    batcher survives and answers the next batch."""
    calls: list[list[str]] = []

    def predict(model: str, texts: list[str]) -> list[dict]:
        calls.append(list(texts))
        if "bad" in texts:
            raise ValueError("bad input")
        return [{"label": t.upper()} for t in texts]

    async def scenario() -> tuple[list, list]:
        batcher = MicroBatcher(lambda: "m", predict, 8, max_wait_s=0.05, max_queue=10)
        batcher.start()
        # three callers whose texts share one batch with the bad one
        failed = await asyncio.gather(
            *(batcher.submit([t]) for t in ("a", "bad", "c")), return_exceptions=True
        )
        after = await batcher.submit(["d"])
        await batcher.stop()
        return failed, after

    failed, after = asyncio.run(scenario())
    assert calls[0] == ["a", "bad", "c"]  # one batch
    assert [type(r) for r in failed] == [ValueError] * 3
    assert [str(r) for r in failed] == ["bad input"] * 3
    assert after == [({"label": "D"}, "m")] and calls[-1] == ["d"]


def test_output_features_from_either_output_shape() -> None:
    cls = output_features({"label": "fresh", "probabilities": {"fresh": 0.8, "rotten": 0.2}})
    assert cls == {"confidence": 0.8, "label": "fresh", "n_entities": 0}
    ents = output_features(
        {
            "entities": [
                {"type": "person", "score": 0.9},
                {"type": "loc", "score": 0.5},
                {"type": "person", "score": 0.7},
            ]
        }
    )
    assert ents["label"] == "person" and ents["n_entities"] == 3
    assert ents["confidence"] == pytest.approx(0.7)
    assert output_features({"entities": []})["label"] == "none"


def test_request_store_is_wal_and_returns_row_ids(tmp_path: Path) -> None:
    store = RequestStore(tmp_path / "r.db")
    ids = store.insert([{"ts": 1.0, "task": "a", "n_chars": 3}, {"ts": 2.0, "task": "b"}])
    assert ids == [1, 2] and store.count("a") == 1 and store.integrity() == "ok"
    store.close()
    conn = sqlite3.connect(tmp_path / "r.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_masking_is_offline_and_replaces_personal_data(monkeypatch: pytest.MonkeyPatch) -> None:
    from emergent.serving.masking import Masker

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("masking tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    placeholders = {
        "EMAIL_ADDRESS": "<EMAIL>",
        "PHONE_NUMBER": "<PHONE>",
        "URL": "<URL>",
        "IP_ADDRESS": "<IP>",
        "CREDIT_CARD": "<CARD>",
        "PERSON": "<PERSON>",
        "LOCATION": "<LOCATION>",
    }

    def ner(texts: list[str]) -> list[list[dict]]:  # stands in for our NER model
        return [
            [
                {"type": "person", "start": 0, "end": 5, "score": 0.9},
                {
                    "type": "geo-loc",
                    "start": t.index("Paris"),
                    "end": t.index("Paris") + 5,
                    "score": 0.8,
                },
            ]
            for t in texts
        ]

    masker = Masker(placeholders, ner, {"person": "PERSON", "geo-loc": "LOCATION"}, 0.5)
    text = (
        "Alice in Paris wrote to alice.smith@example.co.uk from 10.0.0.1, call "
        "+1 212-555-0199, card 4111 1111 1111 1111 not 4111 1111 1111 1112"
    )
    # every kind replaced by its placeholder, the rest of the text kept as it was; the second
    # card number fails the Luhn check and stays
    assert masker.mask(text) == (
        "<PERSON> in <LOCATION> wrote to <EMAIL> from <IP>, call <PHONE>, card <CARD> "
        "not 4111 1111 1111 1112"
    )
    # without our NER model, the people and places stay (only patterns are masked)
    patterns_only = Masker(placeholders)
    assert patterns_only.mask("Alice in Paris, alice@example.org") == "Alice in Paris, <EMAIL>"


def test_token_features_ignore_padding_left_on_the_shared_tokenizer() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    from emergent.serving.features import token_features

    vocab = {"[UNK]": 0, "[PAD]": 1, "a": 2, "b": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.enable_padding(pad_id=1, pad_token="[PAD]", length=10)  # as a batched call leaves it
    rows = token_features(tok, ["a b zzz", "a"])
    assert rows == [
        {"n_tokens": 3, "unk_share": pytest.approx(1 / 3)},
        {"n_tokens": 1, "unk_share": 0.0},
    ]


def test_the_service_is_built_from_the_typed_serve_section(tmp_path: Path) -> None:
    """`serve` as validated (ServeConfig): its values reach the service's settings as typed,
    the masking section as the plain dict the masking process is sent; a local source with
    no package under the export root is refused naming it."""
    from omegaconf import OmegaConf

    from emergent.config import compose
    from emergent.schema import validate_config
    from emergent.serving.settings import build
    from emergent.serving.slots import ModelLoadError
    from tests.conftest import ROOT

    cfg = compose(["serve.source=registry", "serve.limits.max_texts=7"], ROOT / "conf")
    serve = validate_config(cfg).serve
    built = build(serve, ["ner", "sentiment"], tmp_path)
    assert sorted(built.sources) == ["ner", "sentiment"]
    assert built.max_texts == 7 and built.keys_file == tmp_path / serve.keys_file
    assert built.masking == OmegaConf.to_container(cfg.serve.masking)  # plain, as conf/ sets it
    assert isinstance(built.masking["entity_map"], dict)
    local = serve.model_copy(update={"source": "local", "export_root": "nowhere"})
    with pytest.raises(ModelLoadError, match=r"no model package under .*nowhere"):
        build(local, ["ner"], tmp_path)
