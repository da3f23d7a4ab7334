"""Structured pruning of BERT-style encoders: attention heads, FFN neurons and vocabulary rows.

- Heads: importance = |dL/d gate| accumulated over labelled batches, one gate per head
  multiplying its context vector (Michel et al. 2019, "Are Sixteen Heads Really Better than
  One?"). FFN neurons: the same with one gate per intermediate neuron (activation x gradient).
- Every layer loses the same number of heads and neurons, so `intermediate_size` in the HF
  config stays valid. The head count cannot be expressed in a BERT config (transformers derives
  the attention width from hidden_size / num_attention_heads), so it is stored in
  `config.emergent_attention_heads` and `load_pruned` rebuilds the narrower attention layers
  before loading the weights.
- Vocabulary: the embedding keeps the rows of tokens the data uses (plus special tokens and
  single characters, so unseen words still split into pieces instead of [UNK]); the WordPiece
  vocabulary is rewritten to the kept tokens in their old order, so the saved tokenizer emits
  the new ids directly and ONNX/serving need no remapping.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from transformers.pytorch_utils import prune_linear_layer as _prune_linear_layer

from emergent.tasks.shapes import model_inputs

log = logging.getLogger(__name__)

HEADS_KEY = "emergent_attention_heads"


def encoder_layers(model: Any) -> list[Any]:
    return list(model.base_model.encoder.layer)


def head_size(model: Any) -> int:
    return model.config.hidden_size // model.config.num_attention_heads


def heads_per_layer(model: Any) -> int:
    return int(getattr(model.config, HEADS_KEY, model.config.num_attention_heads))


def importance(model: Any, batches: Iterable[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(heads [layers, heads], neurons [layers, intermediate]) importance scores: the absolute
    gradient of the task loss w.r.t. a gate of ones on each head's output and each FFN neuron,
    summed over `batches` (dicts with input_ids, attention_mask, labels)."""
    layers = encoder_layers(model)
    size = head_size(model)
    head_gates = torch.ones(len(layers), heads_per_layer(model), requires_grad=True)
    neuron_gates = torch.ones(
        len(layers), layers[0].intermediate.dense.out_features, requires_grad=True
    )
    head_score = torch.zeros_like(head_gates)
    neuron_score = torch.zeros_like(neuron_gates)

    def gate_heads(index: int) -> Any:
        def hook(module: Any, args: tuple) -> tuple:
            (context,) = args
            gate = head_gates[index].repeat_interleave(size)
            return (context * gate,)

        return hook

    def gate_neurons(index: int) -> Any:
        def hook(module: Any, args: tuple) -> tuple:
            return (args[0] * neuron_gates[index],)

        return hook

    handles = []
    for index, layer in enumerate(layers):
        handles.append(layer.attention.output.dense.register_forward_pre_hook(gate_heads(index)))
        handles.append(layer.output.dense.register_forward_pre_hook(gate_neurons(index)))
    was_training = model.training
    model.eval()  # no dropout: importance of the deterministic network
    try:
        for batch in batches:
            loss = model(**model_inputs(model.config, batch), labels=batch["labels"]).loss
            heads_grad, neurons_grad = torch.autograd.grad(loss, [head_gates, neuron_gates])
            head_score += heads_grad.abs()
            neuron_score += neurons_grad.abs()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return head_score.detach(), neuron_score.detach()


def keep_top(scores: torch.Tensor, keep: int) -> list[torch.Tensor]:
    """Per row, the indices of the `keep` highest scores, in their original order."""
    return [row.topk(keep).indices.sort().values for row in scores]


def prune_linear_layer(
    layer: torch.nn.Linear, index: torch.Tensor, dim: int = 0
) -> torch.nn.Linear:
    """transformers' `prune_linear_layer`: keep the rows (`dim=0`) or columns (`dim=1`) listed."""
    # Its stub asks for `torch.LongTensor`, a legacy tensor class no Tensor is typed as; the
    # indices here are int64 (topk / arange), which is what it needs at run time.
    return _prune_linear_layer(layer, index, dim=dim)  # type: ignore[arg-type]


def prune_heads(model: Any, keep: list[torch.Tensor]) -> None:
    """Keep, in every layer, the heads listed (same count per layer)."""
    size = head_size(model)
    counts = {len(k) for k in keep}
    if len(counts) != 1:
        raise ValueError(f"every layer must keep the same number of heads, got {sorted(counts)}")
    for layer, heads in zip(encoder_layers(model), keep, strict=True):
        index = torch.cat([torch.arange(h * size, (h + 1) * size) for h in heads.tolist()])
        attention = layer.attention.self
        for name in ("query", "key", "value"):
            setattr(attention, name, prune_linear_layer(getattr(attention, name), index))
        attention.num_attention_heads = len(heads)
        attention.all_head_size = len(heads) * size
        output = layer.attention.output
        output.dense = prune_linear_layer(output.dense, index, dim=1)
    setattr(model.config, HEADS_KEY, counts.pop())


def prune_neurons(model: Any, keep: list[torch.Tensor]) -> None:
    """Keep, in every layer, the FFN neurons listed (same count per layer)."""
    counts = {len(k) for k in keep}
    if len(counts) != 1:
        raise ValueError(f"every layer must keep the same number of neurons, got {sorted(counts)}")
    for layer, neurons in zip(encoder_layers(model), keep, strict=True):
        layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, neurons)
        layer.output.dense = prune_linear_layer(layer.output.dense, neurons, dim=1)
    model.config.intermediate_size = counts.pop()


def prune_structure(
    model: Any, head_scores: torch.Tensor, neuron_scores: torch.Tensor, level: float
) -> dict[str, int]:
    """Remove the share `level` of heads and of FFN neurons in every layer (least important
    first; at least one head and one neuron stay). Returns the kept counts."""
    heads = max(1, round(head_scores.shape[1] * (1.0 - level)))
    neurons = max(1, round(neuron_scores.shape[1] * (1.0 - level)))
    if heads < head_scores.shape[1]:
        prune_heads(model, keep_top(head_scores, heads))
    if neurons < neuron_scores.shape[1]:
        prune_neurons(model, keep_top(neuron_scores, neurons))
    return {"heads_per_layer": heads, "intermediate_size": neurons}


def used_token_ids(tokenizer: Any, texts: Iterable[str], batch_size: int = 1024) -> set[int]:
    """Ids the tokenizer produces for `texts`, special tokens and single-character pieces
    (`a`, `##a`) of the vocabulary, so words outside `texts` still tokenize without [UNK]."""
    ids = set(tokenizer.all_special_ids)
    vocab = tokenizer.get_vocab()
    ids.update(i for t, i in vocab.items() if len(t.removeprefix("##")) == 1 and t.isascii())
    chunk: list[str] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == batch_size:
            ids.update(i for row in tokenizer(chunk)["input_ids"] for i in row)
            chunk = []
    if chunk:
        ids.update(i for row in tokenizer(chunk)["input_ids"] for i in row)
    return ids


def prune_vocabulary(model: Any, tokenizer: Any, keep_ids: set[int]) -> Any:
    """Shrink the word embedding to `keep_ids` (old order kept) and return a tokenizer whose
    WordPiece vocabulary holds exactly those tokens, emitting the new ids."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    kept = sorted(keep_ids)
    embeddings = model.get_input_embeddings()
    new = torch.nn.Embedding(len(kept), embeddings.embedding_dim, padding_idx=None)
    new.weight.data = embeddings.weight.data[torch.tensor(kept)].clone()
    model.set_input_embeddings(new)
    model.config.vocab_size = len(kept)
    new_id = {old: i for i, old in enumerate(kept)}
    pad = tokenizer.pad_token_id
    if pad is not None:
        model.config.pad_token_id = new_id[pad]
        new.padding_idx = new_id[pad]

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    old_vocab = spec["model"]["vocab"]
    spec["model"]["vocab"] = {t: new_id[i] for t, i in old_vocab.items() if i in new_id}
    for added in spec.get("added_tokens") or []:
        added["id"] = new_id[added["id"]]
    post = spec.get("post_processor") or {}
    for special in (post.get("special_tokens") or {}).values():
        special["ids"] = [new_id[i] for i in special["ids"]]
    for key in ("cls", "sep"):
        if isinstance(post.get(key), list):  # BertProcessing: ["[CLS]", 101]
            post[key][1] = new_id[post[key][1]]
    backend = Tokenizer.from_str(json.dumps(spec))
    special = {
        name: getattr(tokenizer, name)
        for name in ("unk_token", "pad_token", "cls_token", "sep_token", "mask_token")
        if getattr(tokenizer, name, None) is not None
    }
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=tokenizer.model_max_length,
        do_lower_case=getattr(tokenizer, "do_lower_case", None),
        **special,
    )


def load_pruned(cls: Any, path: Path) -> Any:
    """`cls.from_pretrained(path)` for a model saved after pruning: narrower attention layers
    (recorded in `config.emergent_attention_heads`) are rebuilt before the weights load."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(path))
    heads = getattr(config, HEADS_KEY, None)
    if heads is None or heads == config.num_attention_heads:
        return cls.from_pretrained(str(path)).eval()
    from safetensors.torch import load_file

    model = cls(config)
    prune_heads(model, [torch.arange(heads)] * config.num_hidden_layers)
    state = load_file(str(Path(path) / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the pruned model ({missing + unexpected})")
    return model.eval()
