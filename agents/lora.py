"""LoRA on the policy LM through ``peft`` (the ``lora`` extra: ``pip install -e .[lora]``).

    from agents.rlhf import LoRAConfig, RLHFConfig, train_rlhf
    train_rlhf(RLHFConfig(lora=LoRAConfig(r=16, alpha=32)))    # only the adapter and the value head train

LoRA (Hu et al. 2021) freezes the weights W of the adapted layers and learns W + (alpha / r) B A with
B (out, r) zero at the start, so the adapted model starts as the base model. RLHF needs the base model as
the frozen reference anyway: with the adapter switched off (``peft``'s ``disable_adapter``) the policy's own
module IS the reference, so the second copy of the LM that a full fine-tune keeps is not needed
(the trick TRL's PPO trainer uses with a peft model).

``add_lora`` returns the Hugging Face model with the LoRA layers injected (its forward signature, config and
``gradient_checkpointing_enable`` stay those of the transformers model) and the ``peft`` wrapper that owns
``disable_adapter``.
"""

from __future__ import annotations

import warnings

from torch import nn


def peft_available() -> bool:
    try:
        import peft  # noqa: F401
    except ImportError:
        return False
    return True


def _uses_conv1d(model: nn.Module, targets) -> bool:
    """GPT-2's attention and MLP are transformers' Conv1D (weight stored (in, out)): peft needs fan_in_fan_out."""
    from transformers.pytorch_utils import Conv1D

    names = None if targets in (None, "all-linear") else ([targets] if isinstance(targets, str) else list(targets))
    return any(isinstance(m, Conv1D) and (names is None or name.split(".")[-1] in names)
               for name, m in model.named_modules())


def add_lora(model: nn.Module, config) -> tuple[nn.Module, object]:
    """Inject a LoRA adapter into ``model`` (in place) and freeze everything else in it.

    Args:
        model: a transformers causal LM.
        config: an ``agents.rlhf.LoRAConfig`` (r, alpha, dropout, target_modules).
    Returns:
        (the same transformers model, now with LoRA layers; the ``peft.PeftModel`` wrapping it).
    Raises:
        ImportError: peft is not installed (the message says how to install it).
        ValueError: peft found none of ``target_modules`` in the model (peft's message, with the model's class).
    """
    if not peft_available():
        raise ImportError("LoRA needs peft: pip install -e .[lora]  (or: pip install 'peft>=0.21')")
    from peft import LoraConfig, get_peft_model

    targets = config.target_modules
    targets = list(targets) if isinstance(targets, tuple) else targets
    lora = LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=targets,
                      bias="none", fan_in_fan_out=_uses_conv1d(model, targets))
    try:
        with warnings.catch_warnings():  # peft 0.21 reads transformers' deprecated alias is_gradient_checkpointing
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
            peft_model = get_peft_model(model, lora)
    except ValueError as e:
        raise ValueError(f"cannot add LoRA to {type(model).__name__} (target_modules={targets!r}): {e}") from e
    return peft_model.get_base_model(), peft_model
