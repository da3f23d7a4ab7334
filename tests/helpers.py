"""Helpers the tests share: a free loopback port, waiting for a service to be ready, a
service with a stub model whose every answer a test can predict, and a throw-away
PostgreSQL cluster (the team tests' MLflow backend, the feedback store)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from emergent.bench.serve import free_port


def tiny_bert_config(**overrides: Any) -> Any:
    """A one-layer BERT config that builds in milliseconds (tests override what they need)."""
    from transformers import BertConfig

    settings = {
        "vocab_size": 50,
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": 32,
    }
    return BertConfig(**{**settings, **overrides})


def in_ci() -> bool:
    """True under CI (`CI=true`, as `.ci/run` and most CI services set it)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require(reason: str | None) -> None:
    """Skip with `reason` on a person's machine; fail under CI, where a skip would hide that a
    test did not run (`.ci/run` installs what every test needs). No-op when `reason` is None."""
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"CI must run this test, but {reason}", pytrace=False)
    pytest.skip(reason)


def copy_sqlite(source: Path, dest: Path) -> None:
    """Copy an SQLite database with SQLite's backup API. The MLflow store runs in WAL mode, so
    until a checkpoint its latest writes live in `<file>-wal`: a plain file copy can miss them."""
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(dest)) as dst,
    ):
        src.backup(dst)


def wait_ready(
    get: Callable[[str], int] | str,
    path: str = "/readyz",
    timeout: float = 30.0,
    proc: subprocess.Popen | None = None,
    interval: float = 0.05,
) -> list[int]:
    """Poll `GET path` until it answers 200; return every status seen (refused connections are
    skipped). `get` is a base URL (polled over HTTP) or a function path -> status (e.g. a
    TestClient's). Fails at once when `proc` (the server) exits, else after `timeout` s."""
    if isinstance(get, str):
        base = get

        def get(p: str) -> int:
            return httpx.get(base + p, timeout=2).status_code

    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode} before {path} was 200")
        with contextlib.suppress(httpx.HTTPError, OSError):
            seen.append(get(path))
        if seen and seen[-1] == 200:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} not 200 after {timeout:g} s (saw {seen[-5:]})")
        time.sleep(interval)


class StubPredictor:
    """Stands in for the ONNX predictor: a known answer per text. Sentiment-like: `positive`
    (0.75) when the text holds "good", else `negative` (0.75); `fail` in a text raises, as a
    broken model would."""

    labels = ("negative", "positive")
    max_length = 16

    def __init__(self, task: str = "sentiment") -> None:
        from tokenizers import Tokenizer, models, pre_tokenizers

        from emergent.tasks import SequenceClassificationTask

        # the task definition an export package carries (what feedback is checked against)
        self.task = SequenceClassificationTask(task, {"metric": "f1_macro", "label": "F1"})
        self.tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "good": 1}, unk_token="[UNK]"))
        self.tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        self.calls: list[list[str]] = []

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        self.calls.append(list(texts))
        if any("fail" in t for t in texts):
            raise RuntimeError("stub model failure")
        rows = []
        for text in texts:
            label = "positive" if "good" in text else "negative"
            other = "negative" if label == "positive" else "positive"
            rows.append({"text": text, "label": label, "probabilities": {label: 0.75, other: 0.25}})
        return rows


class StubTagger(StubPredictor):
    """A token-classification stand-in: tags `O`, `B-person`, `I-person`; every word of a
    text holding "Ada" starting with "Ada" is a person, nothing else."""

    labels = ("O", "B-person", "I-person")  # type: ignore[assignment]

    def __init__(self, task: str = "ner") -> None:
        from emergent.tasks import TokenClassificationTask

        super().__init__(task)
        self.task = TokenClassificationTask(task, {"metric": "f1", "label": "F1"})  # type: ignore[assignment]

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        self.calls.append(list(texts))
        rows = []
        for text in texts:
            start = text.find("Ada")
            entities = [] if start < 0 else [
                {"type": "person", "start": start, "end": start + 3, "text": "Ada", "score": 0.9}
            ]  # fmt: skip
            rows.append({"text": text, "entities": entities})
        return rows


def stub_settings(tmp: Path, tasks: tuple[str, ...] = ("sentiment",), **overrides: Any) -> Any:
    """Service settings whose tasks resolve to stub sources (use with `stub_models`)."""
    from emergent.serving.settings import Settings
    from emergent.serving.slots import Source

    values: dict[str, Any] = {
        "sources": {t: (lambda t=t: Source(t, tmp / t, f"emergent-{t}", "stub-1")) for t in tasks},
        "keys_file": tmp / "keys.json",
        "store_path": tmp / "requests.db",
        "warmup_batches": 1,
        "rate_per_second": 0.0,
    }
    values.update(overrides)
    return Settings(**values)


def stub_models(monkeypatch: Any, taggers: tuple[str, ...] = ()) -> dict[str, StubPredictor]:
    """Make the app load a StubPredictor for every source (a StubTagger for the tasks named in
    `taggers`); returns them by task."""
    from emergent.serving import service as service_module
    from emergent.serving.slots import Loaded

    made: dict[str, StubPredictor] = {}

    def load(source: Any, threads: Any, warmup_batches: int) -> Loaded:
        tagger = source.task in taggers
        made[source.task] = predictor = (StubTagger if tagger else StubPredictor)(source.task)
        kind = "entities" if tagger else "classes"
        return Loaded(predictor, source, kind)  # type: ignore[arg-type]

    monkeypatch.setattr(service_module, "load", load)
    return made


def lookup_model(path: Path, table: Any, pooled: bool) -> None:
    """Write an ONNX model whose logits are `table[input_ids]`: per token (token
    classification), or their maximum over the sequence (`pooled`, sequence classification).
    A model whose every output a test can work out by hand."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["per_token"], axis=0)]
    if pooled:
        nodes.append(helper.make_node("ReduceMax", ["per_token"], ["logits"], axes=[1], keepdims=0))
    else:
        nodes.append(helper.make_node("Identity", ["per_token"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "lookup",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [
            helper.make_tensor_value_info(
                "logits",
                TensorProto.FLOAT,
                ["batch", "labels"] if pooled else ["batch", "seq", "labels"],
            )
        ],
        [numpy_helper.from_array(np.asarray(table, dtype=np.float32), "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def known_package(
    package: Path, dest: Path, rows: dict[str, list[float]], default: list[float]
) -> Path:
    """A copy of an export package (tokenizer, labels, task) whose model is a lookup table:
    logits `rows[word]` for the token of each listed word, `default` for every other token.
    Each listed word must be one token of the package's vocabulary (checked)."""
    import numpy as np
    from tokenizers import Tokenizer

    from emergent.serving.predictor import load_package
    from emergent.tasks.token_classification import TokenClassificationTask

    shutil.copytree(package, dest)
    _, labels, task = load_package(dest)
    tokenizer = Tokenizer.from_file(str(dest / "tokenizer.json"))
    table = np.tile(np.asarray(default, dtype=np.float32), (tokenizer.get_vocab_size(), 1))
    assert table.shape[1] == len(labels), (table.shape, labels)
    for word, logits in rows.items():
        token = tokenizer.token_to_id(word)
        assert token is not None, f"{word!r} is not one token of {package}'s vocabulary"
        table[token] = logits
    for name in ("model.int8.onnx", "model.onnx"):
        lookup_model(dest / name, table, pooled=not isinstance(task, TokenClassificationTask))
    return dest


def known_packages(exports: Path, out: Path) -> Path:
    """`out/ner` and `out/sentiment`: the smoke packages with lookup-table models.

    NER: "great" is B-person and "film" I-person, every other token O, each with probability
    exactly 0.9 (a logit of ln(9 (L - 1)) against L - 1 zeros). Sentiment (max over tokens):
    "great" gives logits [0, 3], every other token [1, 0]; so a text with "great" has
    softmax([1, 3]) = (0.1192, 0.8808), one without softmax([1, 0]) = (0.7311, 0.2689).
    """
    import json
    import math

    labels = json.loads((exports / "ner" / "labels.json").read_text(encoding="utf-8"))
    assert {"O", "B-person", "I-person"} <= set(labels), labels
    high = math.log(9 * (len(labels) - 1))

    def row(tag: str) -> list[float]:
        return [high if label == tag else 0.0 for label in labels]

    ner = {"great": row("B-person"), "film": row("I-person")}
    known_package(exports / "ner", out / "ner", ner, default=row("O"))
    known_package(exports / "sentiment", out / "sentiment", {"great": [0.0, 3.0]}, [1.0, 0.0])
    return out


CAUSAL_TEXTS = [
    "Review: a great and fun movie\nSentiment: positive",
    "Review: a terrible waste of time\nSentiment: negative",
    "Review: the plot was bad and dull\nSentiment: negative",
    "Review: a joy from start to end\nSentiment: positive",
] * 20


def tiny_causal_lm(folder: Path, seed: int = 0) -> Path:
    """A two-layer Llama with a byte-level BPE tokenizer trained on `CAUSAL_TEXTS`, saved as an
    HF folder: the smallest model that goes through the causal-LM code paths for real (its
    labels words ` positive` / ` negative` are single tokens)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(CAUSAL_TEXTS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL's bin folder (`initdb`, `pg_ctl`), else one on PATH."""
    found = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


NO_POSTGRES = "PostgreSQL is not installed: `make server-deps` (apt-get install postgresql)"


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throw-away cluster on a free port of 127.0.0.1 with a database `mlflow`; its URI.
    PostgreSQL refuses to run as root, so as root it runs as the `postgres` user."""
    bindir = postgres_bin()
    assert bindir is not None
    base = Path(tempfile.mkdtemp(prefix="emergent-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", free_port()

    def pg(*args: str | Path) -> None:
        out = subprocess.run(
            [*as_user, *map(str, args)], capture_output=True, text=True, timeout=180
        )
        assert out.returncode == 0, f"{args[0]}: {out.stdout[-1500:]}{out.stderr[-1500:]}"

    pg(bindir / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {base}"
    pg(bindir / "pg_ctl", "-D", data, "-l", base / "log", "-w", "-t", "120", "-o", options, "start")
    try:
        pg(bindir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow")
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        pg(bindir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)
