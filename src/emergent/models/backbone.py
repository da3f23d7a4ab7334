"""Backbones and tokenizers: a pretrained backbone named by `model.source` (MiniLM, a causal
LM such as SmolLM2) or a BERT built from config. Every pretrained load goes through
`emergent.models.source` (folders, pkg://, .gguf, hf://), so the tokenizer, pretraining and
fine-tuning stages accept every way of naming a model the few-shot lab does.

Every loader returns a model in *train* mode: `from_pretrained` returns eval mode and Lightning
keeps it, which would silently switch dropout off during training.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from emergent.config import plain_dict
from emergent.models.source import (
    ModelSource,
    load_pretrained,
    load_source_tokenizer,
    resolve_source,
)
from emergent.schema import ModelConfig

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def backbone_source(model_cfg: ModelConfig) -> ModelSource:
    """The pretrained backbone `model.source` names (folder, pkg://, .gguf or hf://)."""
    if not model_cfg.source:
        raise ValueError(f"model {model_cfg.name!r} has no `source`: it is built from config")
    return resolve_source(model_cfg.source)


def backbone_dir(model_cfg: ModelConfig) -> Path:
    """Folder of a pretrained backbone (for a .gguf source: the folder holding the file)."""
    return backbone_source(model_cfg).folder


def is_causal(model_cfg: ModelConfig) -> bool:
    """Whether the preset's backbone is a causal (left-to-right) LM, not a BERT-style encoder."""
    return model_cfg.family == "causal"


def config_overrides(model_cfg: ModelConfig) -> dict[str, Any]:
    """`model.config`: the keys of the backbone's config.json this preset overrides."""
    overrides = model_cfg.config
    return plain_dict(overrides, "model.config") if overrides else {}


def canonical_ids(vocab: Mapping[str, int], special: Sequence[str]) -> dict[str, int]:
    """A trained vocabulary with its ids in a fixed order: the special tokens first, then every
    other token sorted.

    The WordPiece trainer breaks frequency ties in hash-map order, so two runs on the same
    texts learn the same tokens under different ids (huggingface/tokenizers#1794), and every
    model built on them starts from differently ordered embedding rows: the presets that train
    a tokenizer (smoke, scratch, the scale models) did not reproduce run to run.
    """
    rest = sorted(token for token in vocab if token not in special)
    return {token: i for i, token in enumerate([*special, *rest])}


def train_wordpiece(
    texts: Iterable[str], vocab_size: int, min_frequency: int, lowercase: bool, max_length: int
) -> Any:
    """A BERT-style WordPiece tokenizer trained on `texts`, as a HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.model = models.WordPiece(
        canonical_ids(tokenizer.get_vocab(), SPECIAL_TOKENS), unk_token="[UNK]"
    )
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=max_length,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        do_lower_case=lowercase,
    )


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if not tokenizer.is_fast:
        raise ValueError(f"{path}: a fast tokenizer is required (word alignment for NER)")
    return tokenizer


def lowercases(tokenizer: Any) -> bool:
    """Whether the tokenizer lower-cases text before the model sees it (its normalizer turns
    `Ab` into `ab`), i.e. the backbone is uncased and case must reach it another way."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    normalizer = getattr(backend, "normalizer", None)
    if normalizer is None:
        return bool(getattr(tokenizer, "do_lower_case", False))
    return normalizer.normalize_str("Ab") == "ab"


def build_tokenizer(model_cfg: ModelConfig, corpus: Iterable[str]) -> Any:
    """The tokenizer a model preset asks for: trained on the corpus, or the backbone's own."""
    settings = model_cfg.tokenizer
    if settings.train:
        assert settings.vocab_size is not None  # the schema requires one where train is true
        return train_wordpiece(
            corpus,
            vocab_size=settings.vocab_size,
            min_frequency=settings.min_frequency,
            lowercase=settings.lowercase,
            max_length=model_cfg.max_length,
        )
    tokenizer = load_source_tokenizer(backbone_source(model_cfg))
    if tokenizer.pad_token is None:  # a causal LM's tokenizer may have none: batches need one
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.model_max_length = model_cfg.max_length
    return tokenizer


def bert_config(model_cfg: ModelConfig, tokenizer: Any, **extra: Any) -> Any:
    """A `BertConfig` for a from-scratch preset, sized to the tokenizer."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        **{**config_overrides(model_cfg), **extra},
    )


def from_pretrained_logged(cls: Any, path: str | Path | ModelSource, **kwargs: Any) -> Any:
    """`cls.from_pretrained(path, **kwargs)`, its load report as one log line."""
    return load_reporting(cls, path, **kwargs)[0]


def load_reporting(
    cls: Any, path: str | Path | ModelSource, **kwargs: Any
) -> tuple[Any, dict[str, list[str]]]:
    """`cls.from_pretrained(path, **kwargs)` and its loading info (`missing_keys`, ...).

    Loading a checkpoint into another head (MLM weights into a tagger, a sentence encoder into
    an MLM) leaves tensors new and unused by design, and transformers prints a 15-line
    UNEXPECTED/MISSING table on every such load. One log line keeps what matters: which
    parameter groups start from scratch and which checkpoint groups went unused, so an encoder
    layer that failed to load still shows (as `bert.*`).
    """
    # A filter, not a level: transformers runs extra checks (and warns) when this logger's
    # level is raised. Real load errors (mismatched shapes) still raise.
    hf_log = logging.getLogger("transformers.modeling_utils")
    report = _DropLoadReport()
    hf_log.addFilter(report)
    source = path if isinstance(path, ModelSource) else ModelSource(Path(path))
    try:
        model, info = load_pretrained(cls, source, output_loading_info=True, **kwargs)
    finally:
        hf_log.removeFilter(report)
    missing, unused = info["missing_keys"], info["unexpected_keys"]
    if missing or unused:
        log.info(
            "%s from %s: %d tensors newly initialised (%s), %d checkpoint tensors unused (%s)",
            type(model).__name__,
            path,
            len(missing),
            _groups(missing),
            len(unused),
            _groups(unused),
        )
    return model, info


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)


def _groups(keys: Iterable[str]) -> str:
    """Parameter names reduced to their top-level groups: `classifier.*, cls.*`."""
    return ", ".join(sorted({f"{key.split('.')[0]}.*" for key in keys})) or "none"


def load_mlm_model(model_cfg: ModelConfig, tokenizer: Any) -> Any:
    """`BertForMaskedLM`: packaged pretrained weights (MLM head untrained) or random init."""
    from transformers import BertForMaskedLM

    if model_cfg.pretrained:
        model = from_pretrained_logged(
            BertForMaskedLM, backbone_source(model_cfg), **config_overrides(model_cfg)
        )
        if model.config.vocab_size != len(tokenizer):
            raise ValueError(
                f"tokenizer has {len(tokenizer)} tokens but {model_cfg.name} expects "
                f"{model.config.vocab_size}: use the backbone's own tokenizer "
                "(model.tokenizer.train=false)"
            )
    else:
        model = BertForMaskedLM(bert_config(model_cfg, tokenizer))
    return model.train()


def load_causal_backbone(model_cfg: ModelConfig) -> Any:
    """The causal LM `model.source` names, as saved (a GGUF file de-quantized to float32), in
    train mode: pretraining passes it on unchanged for fine-tuning to read."""
    from transformers import AutoModelForCausalLM

    model = load_pretrained(AutoModelForCausalLM, backbone_source(model_cfg))
    return without_quantizer(model).train()


def without_quantizer(model: Any) -> Any:
    """The same weights in a plain model of the same class.

    transformers de-quantizes a GGUF file to ordinary float tensors but keeps its GGUF
    quantizer on the model, and `save_pretrained` refuses any model whose quantizer is not
    serializable: a plain copy saves as ordinary safetensors.
    """
    if getattr(model, "hf_quantizer", None) is None:
        return model
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(model)(config)
    plain.load_state_dict(model.state_dict())
    return plain


def count_parameters(model: Any) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}
