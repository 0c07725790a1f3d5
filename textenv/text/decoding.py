"""IncrementalLM: next-token logits for a batch of left-padded contexts, one new token per call.

Text observations are LEFT-padded windows of length L (ARCHITECTURE.md, "Text observations"): from one
step to the next each row shifts left by one and gains the new token on the right. Re-running the model
over the whole window at every step would cost O(t) per generated token; ``IncrementalLM`` keeps a KV
cache and runs only the new token, so a step costs O(1) model work in the generated length (attention
still reads the t cached columns, which is the same as ``model.generate``).

Per call, row by row:

- the row continues the previous call's row (shifted left by one, one new token appended, nothing real
  dropped off the left): only the new token is run against the cache;
- anything else (a new prompt after a reset, a different batch): the row is re-prefilled from scratch;
- the whole input is identical to the previous call: the memoised outputs are returned, no forward.
  This is how the env and an agent holding the same ``IncrementalLM`` share one forward per step.

Optionally (``prompt_cache_mb > 0``) the prefill of short contexts, the prompts an env restarts episodes
from, is kept per token sequence (least recently used first out, within a memory budget) and copied into
the batch cache when the same prompt comes back, with no forward: the idea of vLLM's automatic prefix
caching, for whole prompts. An env restarts a few rows on most steps, so for a frozen reference model this
removes one of the (small, overhead-bound) model calls of such steps (benchmarks/bench_textgen.py).

Position ids are ``attention_mask.cumsum(-1) - 1`` (clamped at 0), so left padding does not shift the
positions of real tokens and the results equal a full forward over the unpadded text.

The cache is invalidated automatically when the model's parameters change in place (an optimiser step
bumps their version counters), so an agent may keep one ``IncrementalLM`` across PPO updates.

A LoRA policy's reference is the same module with the adapter switched off: ``context`` (e.g. peft's
``disable_adapter``) wraps every forward, and ``params`` (the frozen base weights) key the cache, so an
adapter update does not throw away the reference's remembered prompts. Such a runner is its own object,
with its own memo and store, so adapter-on and adapter-off results never mix.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterable

import numpy as np
import torch
from torch.nn.functional import pad
from transformers import DynamicCache


def cache_keyword(model: torch.nn.Module) -> str:
    """The name under which ``model.forward`` takes a KV cache: ``"cache"`` (transformers >= 5.24, where
    ``past_key_values`` is deprecated until its removal in 5.40) or ``"past_key_values"`` (older releases)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def reference_runner(ref_model, policy, prompt_cache_mb: float, prompt_max_tokens: int) -> "IncrementalLM":
    """The KV-cached runner of an env's frozen reference, keeping the prefill of prompts.

    A policy whose LM (``policy.model``) is the reference module itself either has a ``reference_context()``
    (a LoRA policy: the reference is its base model with the adapter off, in a runner of its own keyed on
    ``policy.reference_parameters()``, so no second copy of the weights), or IS the reference: then its
    own runner (``policy.incremental``) serves both, one forward per token.
    """
    kw = dict(prompt_cache_mb=prompt_cache_mb, prompt_max_tokens=prompt_max_tokens)
    if getattr(policy, "model", None) is not ref_model or not isinstance(ref_model, torch.nn.Module):
        return IncrementalLM(ref_model, **kw)
    if callable(getattr(policy, "reference_context", None)):
        return IncrementalLM(ref_model, context=policy.reference_context, params=policy.reference_parameters(), **kw)
    shared = getattr(policy, "incremental", None)
    if not isinstance(shared, IncrementalLM):
        return IncrementalLM(ref_model, **kw)
    shared.keep_prompts(max(prompt_cache_mb, shared.prompt_cache_bytes / 2**20), prompt_max_tokens)
    return shared


@dataclass
class LMStep:
    """What one call returns for the last position of every row."""

    logits: torch.Tensor
    """(N, V) float32 next-token logits."""
    hidden: torch.Tensor
    """(N, H) last-layer hidden state at the last position (the input of the LM head; for a value head)."""


@dataclass
class _Prefill:
    """One remembered prefill: next-token logits, hidden state and per-layer (keys, values) of its real tokens."""

    logits: torch.Tensor  # (V,)
    hidden: torch.Tensor  # (H,)
    kv: list  # per layer: keys and values, each (heads, n, d)

    @property
    def length(self) -> int:
        return int(self.kv[0][0].shape[1])

    @property
    def nbytes(self) -> int:
        tensors = [self.logits, self.hidden] + [t for pair in self.kv for t in pair]
        return sum(t.numel() * t.element_size() for t in tensors)


class IncrementalLM:
    """KV-cached next-token logits for left-padded batches.

    Args:
        model: a Hugging Face causal LM (``AutoModelForCausalLM``). It is not moved, not put in eval
            mode and never trained here; calls run under ``torch.no_grad()`` on the model's device.
        prompt_cache_mb: memory for remembered prefills (0: none). Rows that start from scratch with at
            most ``prompt_max_tokens`` real tokens are remembered; the entries are dropped when the weights change.
        prompt_max_tokens: the longest context remembered (an env passes its ``max_prompt_tokens``).
        context: called around every forward, returning a context manager (a LoRA policy's
            ``disable_adapter``: the base model as the reference). None: no context.
        params: the parameters whose in-place changes invalidate the cache (default: all of ``model``'s).
    """

    def __init__(self, model: torch.nn.Module, prompt_cache_mb: float = 0.0, prompt_max_tokens: int = 64,
                 context: Callable[[], ContextManager] | None = None, params: Iterable[torch.Tensor] | None = None) -> None:
        if context is not None and not callable(context):
            raise TypeError(f"context must be a callable returning a context manager (or None), got {type(context).__name__}")
        self.model, self.context = model, context
        self.keep_prompts(prompt_cache_mb, prompt_max_tokens)
        self._prompts: OrderedDict[tuple, _Prefill] = OrderedDict()  # token ids -> remembered prefill, LRU order
        self._prompts_bytes, self._prompts_version = 0, None
        self._params = list(model.parameters() if params is None else params)
        first = next(iter(model.parameters()), None)
        self.device = first.device if first is not None else torch.device("cpu")
        self._keep_kw = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
        self._cache_kw = cache_keyword(model)  # read once: the keyword was renamed in transformers 5.24
        self.stats = {"forwards": 0, "prefill_rows": 0, "decode_rows": 0, "memo_hits": 0, "prompt_hits": 0}
        """Counters (tests and benchmarks read them): model calls, rows re-prefilled, rows advanced by one token,
        memo hits, rows started from a remembered prefill."""
        self.reset()

    def keep_prompts(self, prompt_cache_mb: float, prompt_max_tokens: int = 64) -> None:
        """Set the budget of the store of prompt prefills (0 turns it off); what it holds already stays."""
        if isinstance(prompt_cache_mb, bool) or not isinstance(prompt_cache_mb, (int, float)) or not 0 <= prompt_cache_mb < float("inf"):
            raise ValueError(f"prompt_cache_mb must be a finite number of megabytes >= 0 (0 turns it off), got {prompt_cache_mb!r}")
        self.prompt_cache_bytes, self.prompt_max_tokens = int(prompt_cache_mb * 2**20), int(prompt_max_tokens)

    def reset(self) -> None:
        """Forget the cache and the memo (the next call prefills every row)."""
        self._ids: torch.Tensor | None = None  # (N, L) previous input
        self._mask: torch.Tensor | None = None  # (N, L)
        self._cache: DynamicCache | None = None  # per layer (N, heads, C, d) keys and values, reused across calls
        self._cache_mask: torch.Tensor | None = None  # (N, C) which cache columns are real tokens
        self._out: LMStep | None = None
        self._version: int | None = None

    @property
    def cache_len(self) -> int:
        """Number of cached columns C (bounded by the longest live context)."""
        return 0 if self._cache_mask is None else int(self._cache_mask.shape[1])

    @property
    def remembered_prompts(self) -> tuple[tuple[int, ...], ...]:
        """The token ids of every remembered prompt prefill, least recently used first."""
        return tuple(self._prompts)

    @property
    def prompt_cache_used_bytes(self) -> int:
        """Bytes the remembered prompt prefills hold (at most ``prompt_cache_bytes``)."""
        return self._prompts_bytes

    def next_token_logits(self, input_ids, attention_mask) -> torch.Tensor:
        """``(N, L)`` left-padded ids and mask -> ``(N, V)`` float32 next-token logits."""
        return self(input_ids, attention_mask).logits

    @torch.no_grad()
    def __call__(self, input_ids, attention_mask) -> LMStep:
        """Next-token logits and last hidden state for ``(N, L)`` left-padded ``input_ids`` / ``attention_mask``.

        Accepts torch tensors or numpy arrays. Every row needs at least one real token at the last position.
        The returned tensors are shared with later memo hits: do not modify them in place.
        """
        ids = torch.as_tensor(np.asarray(input_ids) if not torch.is_tensor(input_ids) else input_ids)
        mask = torch.as_tensor(np.asarray(attention_mask) if not torch.is_tensor(attention_mask) else attention_mask)
        # Copies: the memo must not change if the caller later writes into its own buffers.
        ids = ids.to(self.device, torch.long, copy=True)
        mask = mask.to(self.device, torch.long, copy=True)
        if ids.ndim != 2 or ids.shape != mask.shape:
            raise ValueError(f"input_ids and attention_mask must both be (N, L), got {tuple(ids.shape)} and {tuple(mask.shape)}")
        if not bool((mask[:, -1] == 1).all()):
            raise ValueError("every row must be LEFT-padded with a real token at the last position (attention_mask[:, -1] == 1)")

        version = self._weights_version()
        same_setup = self._ids is not None and self._version == version and self._ids.shape == ids.shape
        if same_setup and torch.equal(ids, self._ids) and torch.equal(mask, self._mask):
            self.stats["memo_hits"] += 1
            return self._out

        if same_setup:
            prev_ids, prev_mask = self._ids, self._mask
            shifted = (mask[:, :-1] == prev_mask[:, 1:]).all(-1)
            same_tokens = ((ids[:, :-1] == prev_ids[:, 1:]) | (mask[:, :-1] == 0)).all(-1)
            nothing_dropped = prev_mask[:, 0] == 0  # a real token sliding out of the window invalidates the cache
            cont = shifted & same_tokens & nothing_dropped
        else:
            cont = torch.zeros(ids.shape[0], dtype=torch.bool, device=self.device)

        try:
            new_rows = (~cont).nonzero().squeeze(-1)
            if not bool(cont.any()):
                logits, hidden, self._cache, self._cache_mask = self._start_rows(ids, mask, version)
            else:
                # Every row runs its newest token against the cache, restarted rows too (cheaper than splitting
                # the batch and merging caches); their outputs and cache rows are then replaced by a prefill.
                logits, hidden = self._decode(ids, mask)
                self.stats["decode_rows"] += int(cont.sum())
                if len(new_rows):
                    lg, hd, fresh, fresh_mask = self._start_rows(ids[new_rows], mask[new_rows], version)
                    logits[new_rows], hidden[new_rows] = lg, hd
                    self._write_rows(new_rows, fresh, fresh_mask)
            self._trim()
        except BaseException:
            self.reset()  # never keep a half-updated cache
            raise

        self._ids, self._mask, self._version = ids, mask, version
        self._out = LMStep(logits=logits, hidden=hidden)
        return self._out

    # -- the two kinds of forward ------------------------------------------------------------------

    def _forward(self, ids, attn, pos, cache: DynamicCache):
        """One model call that appends to ``cache`` in place. -> logits (n, V) float32, hidden (n, H)."""
        with self.context() if self.context is not None else nullcontext():
            out = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True,
                             output_hidden_states=True, **{self._cache_kw: cache}, **self._keep_kw)
        self.stats["forwards"] += 1
        # Own storage: rows of these get overwritten when some rows are re-prefilled.
        return out.logits[:, -1].float().clone(), out.hidden_states[-1][:, -1].clone()

    def _prefill(self, ids: torch.Tensor, mask: torch.Tensor):
        """Full forward of fresh rows. ``(n, L)`` -> logits (n, V), hidden (n, H), cache, cache mask (n, C)."""
        first = int(mask.any(0).to(torch.int8).argmax())  # drop columns that are padding in every row
        ids, mask = ids[:, first:], mask[:, first:]
        pos = (mask.cumsum(-1) - 1).clamp(min=0)  # (n, C) positions of real tokens start at 0
        # No config: plain full-attention layers that we may trim and rewrite (contexts fit any sliding window).
        cache = DynamicCache()
        logits, hidden = self._forward(ids, mask, pos, cache)
        keep = mask.bool()[:, None, :, None]  # (n, 1, C, 1)
        # Padding keys/values are never attended to; zero them so no stray non-finite value can leak in.
        for layer in cache.layers:
            layer.keys, layer.values = torch.where(keep, layer.keys, 0.0), torch.where(keep, layer.values, 0.0)
        self.stats["prefill_rows"] += ids.shape[0]
        return logits, hidden, cache, mask

    def _decode(self, ids, mask):
        """Run only the newest token of every row against the cache (which grows by one column)."""
        new_ids = ids[:, -1:]  # (N, 1)
        pos = mask.sum(-1, keepdim=True) - 1  # (N, 1)
        self._cache_mask = torch.cat([self._cache_mask, torch.ones_like(new_ids)], dim=1)  # (N, C + 1)
        return self._forward(new_ids, self._cache_mask, pos, self._cache)

    # -- rows that start from scratch: remembered prefills, else a prefill --------------------------------

    @torch.no_grad()
    def remember(self, contexts, batch_size: int = 256) -> int:
        """Prefill token-id sequences ahead of use, in batches, until the prompt cache is full.

        An env calls this with its prompt list so that later restarts cost no forward. Sequences longer
        than ``prompt_max_tokens``, empty ones and ones already remembered are skipped. Returns how many
        sequences are remembered in all.
        """
        if self.prompt_cache_bytes == 0:
            return 0
        self._drop_stale_prompts(self._weights_version())
        todo = list(dict.fromkeys(tuple(int(t) for t in c) for c in contexts))
        todo = [c for c in todo if 0 < len(c) <= self.prompt_max_tokens and c not in self._prompts]
        for start in range(0, len(todo), batch_size):
            if self._prompts and self._prompts_bytes >= self.prompt_cache_bytes * 0.9:
                break  # full: keep room for the prompts that actually come up
            chunk = todo[start:start + batch_size]
            width = max(len(c) for c in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long, device=self.device)
            mask = torch.zeros_like(ids)
            for j, c in enumerate(chunk):
                ids[j, width - len(c):] = torch.tensor(c)
                mask[j, width - len(c):] = 1
            self._remember(chunk, range(len(chunk)), *self._prefill(ids, mask))
        return len(self._prompts)

    def _drop_stale_prompts(self, version: int) -> None:
        if self._prompts_version != version:  # new weights: every remembered prefill is stale
            self._prompts.clear()
            self._prompts_bytes, self._prompts_version = 0, version

    def _start_rows(self, ids: torch.Tensor, mask: torch.Tensor, version: int):
        """``_prefill``'s outputs for fresh rows, taking remembered prompts from the store instead of the model."""
        if self.prompt_cache_bytes == 0:
            return self._prefill(ids, mask)
        self._drop_stale_prompts(version)
        keys = [tuple(row[m.bool()].tolist()) for row, m in zip(ids, mask)]
        found = [self._prompts.get(k) for k in keys]
        missing = [j for j, entry in enumerate(found) if entry is None]
        if len(missing) == len(keys):  # nothing to copy: the plain prefill's outputs are already in place
            out = self._prefill(ids, mask)
            self._remember(keys, range(len(keys)), *out)
            return out
        if missing:
            out = self._prefill(ids[missing], mask[missing])
            for j, entry in zip(missing, self._remember(keys, missing, *out)):
                found[j] = entry
        for k, entry in zip(keys, found):
            if k in self._prompts:
                self._prompts.move_to_end(k)  # most recently used
        self.stats["prompt_hits"] += len(keys) - len(missing)
        return self._stack(found)

    def _remember(self, keys, rows, logits, hidden, cache: DynamicCache, cache_mask) -> list[_Prefill]:
        """Split a batched prefill into one entry per row and store those that are prompts."""
        entries = []
        for j, row in enumerate(rows):
            n = int(cache_mask[j].sum())  # real tokens, right-aligned
            entry = _Prefill(logits[j].clone(), hidden[j].clone(),
                             [(layer.keys[j, :, -n:].clone(), layer.values[j, :, -n:].clone()) for layer in cache.layers])
            entries.append(entry)
            key = keys[row]
            if n <= self.prompt_max_tokens and key not in self._prompts and entry.nbytes <= self.prompt_cache_bytes:
                while self._prompts_bytes + entry.nbytes > self.prompt_cache_bytes:
                    self._prompts_bytes -= self._prompts.popitem(last=False)[1].nbytes  # least recently used
                self._prompts[key] = entry
                self._prompts_bytes += entry.nbytes
        return entries

    def _stack(self, entries: list[_Prefill]):
        """Entries -> a left-padded batch: logits (n, V), hidden (n, H), cache (n, heads, C, d), mask (n, C)."""
        width = max(e.length for e in entries)
        mask = torch.zeros(len(entries), width, dtype=torch.long, device=self.device)
        cache = DynamicCache()
        for layer_idx in range(len(entries[0].kv)):
            k0, _ = entries[0].kv[layer_idx]
            keys = k0.new_zeros(len(entries), k0.shape[0], width, k0.shape[2])
            values = torch.zeros_like(keys)
            for j, e in enumerate(entries):
                k, v = e.kv[layer_idx]
                keys[j, :, width - e.length:], values[j, :, width - e.length:] = k, v
            cache.update(keys, values, layer_idx)
        for j, e in enumerate(entries):
            mask[j, width - e.length:] = 1
        return (torch.stack([e.logits for e in entries]), torch.stack([e.hidden for e in entries]), cache, mask)

    # -- bookkeeping ---------------------------------------------------------------------------------

    def _write_rows(self, rows, fresh: DynamicCache, fresh_mask) -> None:
        """Put freshly prefilled rows into the batch cache, right-aligned; their older columns are masked out."""
        c, c_new = self._cache_mask.shape[1], fresh_mask.shape[1]
        if c_new > c:  # rare: the new prompt is longer than every cached context, widen the cache on the left
            added = c_new - c  # new columns on the left
            self._cache_mask = pad(self._cache_mask, (added, 0))
            for layer in self._cache.layers:
                layer.keys, layer.values = pad(layer.keys, (0, 0, added, 0)), pad(layer.values, (0, 0, added, 0))
            c = c_new
        self._cache_mask[rows] = 0
        self._cache_mask[rows, c - c_new:] = fresh_mask
        for layer, new in zip(self._cache.layers, fresh.layers):  # (N, heads, C, d) <- (n, heads, C', d)
            layer.keys[rows, :, c - c_new:] = new.keys
            layer.values[rows, :, c - c_new:] = new.values

    def _trim(self) -> None:
        """Drop leading cache columns that are padding in every row (a view, no copy).

        Each row's real tokens form a block that ends at the last column, so the columns nobody attends to
        are exactly the leading ones; dropping them keeps the cache no longer than the longest live context.
        """
        first = int(self._cache_mask.any(0).to(torch.int8).argmax())
        if first > 0:
            self._cache_mask = self._cache_mask[:, first:]
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]

    def _weights_version(self) -> int:
        # In-place updates (optimizer.step, load_state_dict) bump each tensor's version counter.
        return sum(p._version for p in self._params)
