"""The reward model itself: a transformer trunk and a one-output linear head; making, saving and loading one.

The model is any ``AutoModelForSequenceClassification`` (GPT-2, Llama, Qwen, ... ``init_reward_model`` starts
one from a causal LM's trunk) with ``num_labels=1``: the trunk's hidden state at the last non-padding token
goes through ``Linear(hidden, 1)`` (the lecture's "reward model architecture" slide). transformers finds that
token as the rightmost one that is not ``config.pad_token_id``, so that id must be set.
"""

from __future__ import annotations

from pathlib import Path


def init_reward_model(lm, tokenizer=None):
    """An ``AutoModelForSequenceClassification`` (one output) whose trunk is a copy of ``lm``'s.

    Any architecture transformers has a sequence-classification class for (GPT-2, Llama, Qwen, Mistral, ...):
    the config is the LM's own, with ``num_labels=1`` and ``pad_token_id`` set; the head gets the class's own
    initialisation, the trunk (``base_model``) the LM's weights.

    Args:
        lm: a causal LM module or a name/directory holding one (the SFT model).
        tokenizer: its tokenizer: ``config.pad_token_id`` becomes its pad token, else its EOS (batches are
            padded on the right, so the last real token is found either way; see ``textenv.reward_model.scoring``).

    Returns:
        The new sequence classifier, its trunk holding a copy of ``lm``'s weights.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if isinstance(lm, (str, Path)):
        lm = AutoModelForCausalLM.from_pretrained(str(lm))
    config = lm.config.__class__.from_dict(lm.config.to_dict())
    config.num_labels = 1
    pad = None
    if tokenizer is not None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        pad = getattr(config, "pad_token_id", None)
        if pad is None:
            pad = getattr(config, "eos_token_id", None)
    if isinstance(pad, (list, tuple)):
        pad = pad[0] if pad else None
    config.pad_token_id = None if pad is None else int(pad)
    model = AutoModelForSequenceClassification.from_config(config)  # the head gets the class's own init
    model.base_model.load_state_dict(lm.base_model.state_dict())
    return model


def save_reward_model(model, tokenizer, path: str | Path) -> Path:
    """``save_pretrained`` the model (safetensors) and the tokenizer beside it, set to pad on the right."""
    path = Path(path)
    model.save_pretrained(path)
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"  # what the sequence-classification head's position ids expect
    try:
        tokenizer.save_pretrained(path)
    finally:
        tokenizer.padding_side = side
    return path


def load_reward_model(path: str | Path):
    """(model, tokenizer) from a directory written by ``save_reward_model``; the model in eval mode."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(path)
    return model.eval(), AutoTokenizer.from_pretrained(path)
