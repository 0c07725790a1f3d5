"""IncrementalLM: KV-cached logits equal a full recompute; memo; bounded cache; invalidation on updates."""

import numpy as np
import pytest
import torch

from text_fixtures import make_lm
from textenv.text.decoding import IncrementalLM

L = 12


def full_forward(model, ids, mask):
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True)
    return out.logits[:, -1], out.hidden_states[-1][:, -1]


def fresh_row(gen):
    k = int(gen.integers(1, 5))
    ids = np.zeros(L, dtype=np.int64)
    mask = np.zeros(L, dtype=np.int64)
    ids[-k:] = gen.integers(3, 60, k)
    mask[-k:] = 1
    return ids, mask


def rollout(lm, model, steps, n=5, reset_prob=0.15, seed=0):
    """Drive lm like an env would: shift left, append a token, restart some rows; compare with full forwards."""
    gen = np.random.default_rng(seed)
    rows = [fresh_row(gen) for _ in range(n)]
    ids = torch.tensor(np.stack([r[0] for r in rows]))
    mask = torch.tensor(np.stack([r[1] for r in rows]))
    err = 0.0
    for _ in range(steps):
        out = lm(ids, mask)
        ref_logits, ref_hidden = full_forward(model, ids, mask)
        err = max(err, (out.logits - ref_logits).abs().max().item(), (out.hidden - ref_hidden).abs().max().item())
        assert lm.cache_len <= L
        new = torch.tensor(gen.integers(3, 60, n))
        ids = torch.cat([ids[:, 1:], new[:, None]], 1)
        mask = torch.cat([mask[:, 1:], torch.ones(n, 1, dtype=torch.long)], 1)
        for i in range(n):
            if mask[i, 0] == 1 or gen.random() < reset_prob:  # context full, or a new episode
                r = fresh_row(gen)
                ids[i], mask[i] = torch.tensor(r[0]), torch.tensor(r[1])
    return err


def test_incremental_equals_full_recompute_with_resets_fp32():
    model = make_lm()
    lm = IncrementalLM(model)
    err = rollout(lm, model, steps=40)
    assert err < 1e-4  # logits are O(100) here (sharpened embeddings); relative error ~1e-7
    assert lm.stats["decode_rows"] > lm.stats["prefill_rows"]  # most rows advanced by one token


def test_incremental_equals_full_recompute_tight_on_unscaled_model():
    torch.manual_seed(0)
    from transformers import GPT2LMHeadModel

    from text_fixtures import tiny_gpt2_config

    model = GPT2LMHeadModel(tiny_gpt2_config()).eval()
    assert rollout(IncrementalLM(model), model, steps=30, seed=1) < 1e-5


def test_only_new_tokens_are_run():
    model = make_lm()
    lm = IncrementalLM(model)
    ids = torch.tensor([[0, 0, 5, 6], [0, 7, 8, 9]])
    mask = (ids != 0).long()
    lm(ids, mask)
    assert lm.stats["prefill_rows"] == 2
    ids2 = torch.cat([ids[:, 1:], torch.tensor([[10], [11]])], 1)
    mask2 = torch.cat([mask[:, 1:], torch.ones(2, 1, dtype=torch.long)], 1)
    lm(ids2, mask2)
    assert lm.stats["prefill_rows"] == 2 and lm.stats["decode_rows"] == 2


def test_identical_input_is_memoised_without_a_forward():
    model = make_lm()
    lm = IncrementalLM(model)
    ids = np.array([[0, 3, 4, 5]])
    mask = np.array([[0, 1, 1, 1]])
    first = lm(ids, mask)
    forwards = lm.stats["forwards"]
    second = lm(torch.tensor(ids), torch.tensor(mask))  # numpy or torch, same values
    assert second is first
    assert lm.stats["forwards"] == forwards and lm.stats["memo_hits"] == 1
    assert torch.equal(lm.next_token_logits(ids, mask), first.logits)


def test_memo_survives_the_caller_mutating_its_buffers():
    lm = IncrementalLM(make_lm())
    ids = torch.tensor([[0, 3, 4, 5]])
    mask = torch.tensor([[0, 1, 1, 1]])
    first = lm(ids, mask).logits.clone()
    ids[0, -1] = 9  # caller reuses its buffer for a different context
    second = lm(ids, mask).logits
    assert not torch.equal(first, second)


def test_an_optimizer_step_makes_the_next_call_use_the_new_weights():
    """An agent keeps one IncrementalLM across PPO updates: after ``optimizer.step()`` the cached keys and
    values of the old weights must not be reused, even for a row that continues the previous call's row."""
    model = make_lm()
    lm = IncrementalLM(model)
    lm(torch.tensor([[0, 3, 4, 5]]), torch.tensor([[0, 1, 1, 1]]))  # caches the prefix under the old weights
    ids, mask = torch.tensor([[3, 4, 5, 6]]), torch.ones(1, 4, dtype=torch.long)  # its continuation
    before = full_forward(model, ids, mask)[0]

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, -1]
    loss = -torch.log_softmax(logits, -1)[0, 7]  # make token 7 likelier: every layer gets a gradient
    loss.backward()
    optimizer.step()

    after = lm(ids, mask).logits
    assert torch.allclose(after, full_forward(model, ids, mask)[0], atol=1e-5)
    assert (after - before).abs().max() > 0.05  # the update did move the logits
    assert after[0].log_softmax(-1)[7] > before[0].log_softmax(-1)[7]


def test_cache_stays_bounded_over_many_episodes():
    model = make_lm()
    lm = IncrementalLM(model)
    rollout(lm, model, steps=120, n=3, reset_prob=0.3, seed=2)
    assert lm.cache_len <= L


def test_bad_inputs():
    lm = IncrementalLM(make_lm())
    with pytest.raises(ValueError, match=r"\(N, L\)"):
        lm(torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="LEFT-padded"):
        lm(torch.tensor([[3, 4, 0]]), torch.tensor([[1, 1, 0]]))


def test_restart_with_a_prompt_longer_than_every_cached_context():
    model = make_lm()
    lm = IncrementalLM(model)
    ids = torch.tensor([[0, 0, 0, 0, 0, 5], [0, 0, 0, 0, 0, 6]])
    mask = (ids != 0).long()
    lm(ids, mask)
    assert lm.cache_len == 1
    ids2 = torch.tensor([[0, 0, 0, 0, 5, 7], [0, 8, 9, 10, 11, 12]])  # row 0 continues, row 1 restarts (5 tokens)
    mask2 = (ids2 != 0).long()
    out = lm(ids2, mask2)
    assert lm.cache_len == 5 and lm.stats["decode_rows"] == 1
    assert torch.allclose(out.logits, full_forward(model, ids2, mask2)[0], atol=1e-4)
    ids3 = torch.cat([ids2[:, 1:], torch.tensor([[13], [14]])], 1)
    out = lm(ids3, torch.ones_like(ids3) * (ids3 != 0))
    assert torch.allclose(out.logits, full_forward(model, ids3, (ids3 != 0).long())[0], atol=1e-4)


# -- the prompt cache: remembered prefills --------------------------------------------------------------


def left_padded(rows, width=L):
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
    return ids, (ids != 0).long()


def test_prompt_cache_keeps_results_equal_to_a_full_recompute():
    model = make_lm()
    lm = IncrementalLM(model, prompt_cache_mb=1, prompt_max_tokens=4)
    err = rollout(lm, model, steps=60, n=5, reset_prob=0.3, seed=4)  # fresh rows of 1-4 tokens recur
    assert err < 1e-4
    assert lm.stats["prompt_hits"] > 0


def test_remembered_prompts_start_without_a_forward():
    model = make_lm()
    lm = IncrementalLM(model, prompt_cache_mb=1, prompt_max_tokens=4)
    assert lm.remember([[5, 6, 7], [8], [5, 6, 7], [9] * 5]) == 2  # duplicates and over-long ones skipped
    forwards = lm.stats["forwards"]
    ids, mask = left_padded([[8], [5, 6, 7]])
    out = lm(ids, mask)
    assert lm.stats["forwards"] == forwards and lm.stats["prompt_hits"] == 2
    assert torch.allclose(out.logits, full_forward(model, ids, mask)[0], atol=1e-4)
    # Continuing from the copied cache matches too, and a new prompt next to a remembered one is prefilled.
    ids2, mask2 = left_padded([[8, 11], [3, 4]])
    out = lm(ids2, mask2)
    assert lm.stats["forwards"] == forwards + 2 and lm.stats["prompt_hits"] == 2  # a decode and one prefill
    assert torch.allclose(out.logits, full_forward(model, ids2, mask2)[0], atol=1e-4)


def test_prompt_cache_respects_its_memory_budget_least_recently_used_first():
    model = make_lm()
    lm = IncrementalLM(model, prompt_cache_mb=1, prompt_max_tokens=4)
    lm.remember([[5]])
    per_prompt = lm.prompt_cache_used_bytes
    lm.prompt_cache_bytes = 3 * per_prompt  # room for three one-token prompts
    for tok in (6, 7, 5, 8):  # 5 is used again before 8 arrives, so 6 is the one evicted
        lm(*left_padded([[tok]]))
    assert lm.prompt_cache_used_bytes <= lm.prompt_cache_bytes
    assert lm.remembered_prompts == ((7,), (5,), (8,))  # least recently used first


def test_prompt_cache_is_dropped_when_weights_change():
    model = make_lm()
    lm = IncrementalLM(model, prompt_cache_mb=1)
    lm.remember([[5, 6]])
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.add_(0.5)
    ids, mask = left_padded([[5, 6]])
    out = lm(ids, mask)
    assert lm.stats["prompt_hits"] == 0
    assert torch.allclose(out.logits, full_forward(model, ids, mask)[0], atol=1e-4)


@pytest.mark.parametrize("bad", [-1, float("nan"), "64", True])
def test_prompt_cache_size_must_be_a_non_negative_number(bad):
    with pytest.raises(ValueError, match="prompt_cache_mb"):
        IncrementalLM(make_lm(), prompt_cache_mb=bad)
