"""The tiny GPT-2 "SFT" model: next-token training on the reviews, and sampling completions from it.

In RLHF the SFT model is both PPO's starting policy and its frozen reference; here it is a transformers
``GPT2LMHeadModel`` of a few hundred thousand parameters trained on ``<|bos|> review <|eos|>``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class SFTConfig:
    """Model size and training schedule of the SFT language model."""

    n_layer: int = 2
    """Transformer blocks."""
    n_embd: int = 96
    """Width of the residual stream."""
    n_head: int = 4
    """Attention heads per block."""
    n_positions: int = 64
    """Longest sequence (bos + prompt + completion) the model can see."""
    steps: int = 1500
    """Optimizer steps."""
    batch_size: int = 64
    """Reviews per step."""
    lr: float = 3e-3
    """Peak AdamW learning rate (linear warm-up, then cosine decay to 10%)."""
    warmup_steps: int = 100
    """Steps of linear warm-up."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    seed: int = 0
    """Seeds the initial weights and the data order."""


def make_model(config: SFTConfig, tokenizer):
    """A freshly initialised ``GPT2LMHeadModel`` sized by ``config`` for ``tokenizer``'s vocabulary."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(config.seed)
    gpt2 = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # No dropout: the corpus is far larger than this model can memorise, and PPO computes
        # probability ratios in train mode, where dropout would add noise to every one of them.
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(gpt2)


def encode_reviews(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """``<|bos|> text <|eos|>`` ids per text (the tokenizer adds bos); longer ones are an error."""
    ids = [row + [tokenizer.eos_token_id] for row in tokenizer(list(texts))["input_ids"]]
    too_long = [len(r) for r in ids if len(r) > max_length]
    if too_long:
        raise ValueError(f"{len(too_long)} reviews are longer than n_positions={max_length} tokens "
                         f"(longest {max(too_long)}); expected every review to fit")
    return ids


def _lr_factor(step: int, config: SFTConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _batches(lengths: list[int], batch_size: int, gen) -> list[list[int]]:
    """One epoch of batches: shuffled, then sorted by length within windows of 50 batches.

    Similar lengths share a batch, so little compute goes to padding; the order is still random.
    """
    import torch

    order = torch.randperm(len(lengths), generator=gen).tolist()
    window = 50 * batch_size
    batches = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w : w + window], key=lambda i: lengths[i])
        batches += [chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size)]
    perm = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in perm]


def train_sft(model, tokenizer, texts: list[str], config: SFTConfig) -> dict[str, float]:
    """Train ``model`` in place on ``texts``; returns {"loss_first", "loss_last"} (means over 50 steps).

    One review per row, starting at position 0, right-padded. (Packing reviews end to end into full
    rows was faster per token but taught this tiny model, with its learned absolute positions, much
    worse long-range agreement: "an old" -> "friends".) The data order comes from ``config.seed``.
    """
    import torch

    rows = encode_reviews(tokenizer, texts, model.config.n_positions)
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, config))
    model.train()
    batches: list[list[int]] = []
    losses: list[float] = []
    for step in range(config.steps):
        if not batches:
            batches = _batches([len(r) for r in rows], config.batch_size, gen)
        input_ids, attention_mask = _right_pad([rows[i] for i in batches.pop()], tokenizer.pad_token_id)
        labels = input_ids.masked_fill(attention_mask == 0, -100)  # no loss on padding
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    window = min(50, len(losses))
    return {"loss_first": sum(losses[:window]) / window, "loss_last": sum(losses[-window:]) / window}


def _right_pad(rows: list[list[int]], pad_id: int):
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def generate_completions(model, tokenizer, prompts: list[str], n_per_prompt: int = 1,
                         max_new_tokens: int = 40, temperature: float = 1.0, seed: int = 0,
                         batch_size: int = 128) -> list[list[str]]:
    """Sample ``n_per_prompt`` completions per prompt (plain temperature sampling, no top-k / top-p).

    Returns one list per prompt. A completion is decoded without special tokens and keeps its leading
    space (" was great."), so ``prompt + completion`` is the full review.
    """
    import torch

    torch.manual_seed(seed)
    tokenizer.padding_side = "left"  # generation appends on the right
    out: list[list[str]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        enc = tokenizer(chunk, return_tensors="pt", padding=True)
        with torch.no_grad():
            seqs = model.generate(
                **enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                max_new_tokens=max_new_tokens, num_return_sequences=n_per_prompt,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )  # (len(chunk) * n, T_prompt + new)
        new = seqs[:, enc["input_ids"].shape[1]:]
        texts = tokenizer.batch_decode(new, skip_special_tokens=True)
        out += [texts[i * n_per_prompt : (i + 1) * n_per_prompt] for i in range(len(chunk))]
    return out
