"""Label-word scores at the [MASK] of cloze prompts, batched without gradient."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def mlm_head(model: Any) -> Any:
    """The vocabulary head of a BERT-style masked LM (transform + tied decoder)."""
    head = getattr(model, "cls", None) or getattr(model, "lm_head", None)
    if head is None:
        raise TypeError(f"{type(model).__name__} has no MLM head (`cls` or `lm_head`)")
    return head


def pad_prompts(tokenizer: Any, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Right-pad encoded prompts; keep each [MASK] position."""
    batch = tokenizer.pad({"input_ids": [r["input_ids"] for r in rows]}, return_tensors="pt")
    batch["mask_pos"] = torch.tensor([r["mask_pos"] for r in rows])
    return dict(batch)


def mask_logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Full-vocabulary logits at each row's [MASK] (the head runs on those positions only)."""
    hidden = model.base_model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    at_mask = hidden[torch.arange(hidden.size(0)), batch["mask_pos"]]
    return mlm_head(model)(at_mask)


def label_word_logprobs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[dict[str, Any]],
    word_ids: Sequence[int],
    batch_size: int = 32,
) -> torch.Tensor:
    """log p(word | prompt) over the whole vocabulary, for each label word: [N, labels]."""
    was_training = model.training
    model.eval()
    ids = torch.tensor(list(word_ids))
    out = []
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            batch = pad_prompts(tokenizer, prompts[start : start + batch_size])
            out.append(mask_logits(model, batch).float().log_softmax(-1)[:, ids])
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, len(ids))
