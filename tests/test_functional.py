"""The returns and losses of agents.functional on numbers worked out by hand (in the comments)."""

import math

import pytest
import torch

from agents import functional as F


def t(*rows):
    """A (T, 1) float tensor from per-step values."""
    return torch.tensor(rows, dtype=torch.float32)[:, None]


def test_gae_terminal_episode():
    # deltas: 1 + .9*1 - .5 = 1.4 ; 2 + .9*1.5 - 1 = 2.35 ; 3 + 0 - 1.5 = 1.5 (terminated: no bootstrap)
    # A2 = 1.5 ; A1 = 2.35 + .72*1.5 = 3.43 ; A0 = 1.4 + .72*3.43 = 3.8696
    adv, ret = F.gae(t(1, 2, 3), t(0.5, 1.0, 1.5), t(1.0, 1.5, 2.0), t(0, 0, 1), t(0, 0, 1), 0.9, 0.8)
    assert torch.allclose(adv, t(3.8696, 3.43, 1.5))
    assert torch.allclose(ret, t(4.3696, 4.43, 3.0))


def test_gae_bootstraps_on_truncation_but_not_termination():
    # truncated at t=2: delta2 = 3 + .9*2 - 1.5 = 3.3 ; A1 = 2.35 + .72*3.3 = 4.726 ; A0 = 1.4 + .72*4.726
    adv, _ = F.gae(t(1, 2, 3), t(0.5, 1.0, 1.5), t(1.0, 1.5, 2.0), t(0, 0, 0), t(0, 0, 1), 0.9, 0.8)
    assert torch.allclose(adv, t(1.4 + 0.72 * 4.726, 4.726, 3.3))


def test_gae_does_not_leak_across_episodes():
    # episode ends (terminated) after t=0: A0 = 1 - .5 = .5 ; the next episode runs to the rollout's end
    adv, _ = F.gae(t(1, 2, 3), t(0.5, 1.0, 1.5), t(9.0, 1.5, 2.0), t(1, 0, 0), t(1, 0, 0), 0.9, 0.8)
    assert torch.allclose(adv, t(0.5, 4.726, 3.3))


def test_gae_lambda_one_is_monte_carlo_and_lambda_zero_is_td():
    r, v, nv = t(1, 2, 3), t(0.5, 1.0, 1.5), t(1.0, 1.5, 2.0)
    term = t(0, 0, 1)
    _, ret1 = F.gae(r, v, nv, term, term, 0.9, 1.0)
    assert torch.allclose(ret1, F.rewards_to_go(r, term, 0.9))
    adv0, _ = F.gae(r, v, nv, term, term, 0.9, 0.0)
    assert torch.allclose(adv0, r + 0.9 * nv * (1 - term) - v)


def test_gae_mask_zeroes_and_cuts():
    # NEXT_STEP autoreset: step 1 is the reset step after an episode ended at step 0
    adv, _ = F.gae(t(1, 0, 3), t(0, 7, 0), t(7, 0, 0), t(1, 0, 1), t(1, 0, 1), 1.0, 1.0, mask=t(1, 0, 1))
    assert torch.allclose(adv, t(1, 0, 3))


def test_rewards_to_go_by_hand():
    # gamma .5, episode [1, 2] then [3]: G = [1 + .5*2, 2, 3]
    assert torch.allclose(F.rewards_to_go(t(1, 2, 3), t(0, 1, 0), 0.5), t(2, 2, 3))
    # the running episode is bootstrapped from V(s_3) = 4 when next_values are given: 3 + .5*4 = 5
    g = F.rewards_to_go(t(1, 2, 3), t(0, 1, 0), 0.5, next_values=t(0, 0, 4), terminated=t(0, 1, 0))
    assert torch.allclose(g, t(2, 2, 5))
    # truncated (ends, not terminated) episode is bootstrapped at its end: 2 + .5*10 = 7 ; 1 + .5*7 = 4.5
    g = F.rewards_to_go(t(1, 2, 3), t(0, 1, 0), 0.5, next_values=t(0, 10, 0), terminated=t(0, 0, 0))
    assert torch.allclose(g, t(4.5, 7, 3))


def test_rewards_to_go_skips_masked_steps():
    g = F.rewards_to_go(t(1, 5, 3), t(1, 0, 0), 1.0, mask=t(1, 0, 1))
    assert torch.allclose(g, t(1, 0, 3))


def test_episode_returns_whole_return_at_every_step():
    # episodes [1, 2] and [3] with gamma .5: R = 1 + .5*2 = 2 for both steps of the first
    assert torch.allclose(F.episode_returns(t(1, 2, 3), t(0, 1, 1), 0.5), t(2, 2, 3))
    two_cols = torch.tensor([[1.0, 0.0], [2.0, 1.0]])
    ends = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert torch.allclose(F.episode_returns(two_cols, ends), torch.tensor([[1.0, 1.0], [2.0, 1.0]]))


def test_episode_returns_skip_the_masked_reset_step():
    # NEXT_STEP autoreset: step 2 is the ignored reset step between episodes [1, 2] and [10, 20]
    r = F.episode_returns(t(1, 2, 0, 10, 20), t(0, 1, 0, 0, 1), mask=t(1, 1, 0, 1, 1))
    assert torch.allclose(r, t(3, 3, 0, 30, 30))


def test_policy_loss_clips_both_ways():
    old = torch.zeros(4)
    logp = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5]))
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    # min(1.5, 1.2) = 1.2 ; min(-1.5, -1.2) = -1.5 ; min(.5, .8) = .5 ; min(-.5, -.8) = -.8
    loss, info = F.policy_loss(logp, old, adv, 0.2)
    assert loss.item() == pytest.approx(-(1.2 - 1.5 + 0.5 - 0.8) / 4)
    assert info["clip_fraction"].item() == pytest.approx(1.0)
    assert info["ratio"].item() == pytest.approx(1.0)
    # k3 at r = 1.5: .5 - log 1.5 ; at r = .5: -.5 - log .5
    expected_kl = (2 * (0.5 - math.log(1.5)) + 2 * (-0.5 - math.log(0.5))) / 4
    assert info["approx_kl"].item() == pytest.approx(expected_kl, rel=1e-5)


def test_policy_loss_at_ratio_one_is_the_policy_gradient():
    # At ratio 1 the clipped surrogate's gradient is the REINFORCE/advantage gradient -mean(A * grad log pi).
    logits = torch.tensor([[0.3, -0.2], [0.1, 0.4]], requires_grad=True)
    actions, adv = torch.tensor([0, 1]), torch.tensor([2.0, -1.0])
    logp = torch.log_softmax(logits, -1)[torch.arange(2), actions]
    loss, _ = F.policy_loss(logp, logp.detach(), adv, 0.2)
    (g1,) = torch.autograd.grad(loss, logits)
    logp = torch.log_softmax(logits, -1)[torch.arange(2), actions]
    (g2,) = torch.autograd.grad(-(adv * logp).mean(), logits)
    assert torch.allclose(g1, g2)


def test_policy_loss_mask():
    loss, _ = F.policy_loss(torch.zeros(2), torch.zeros(2), torch.tensor([1.0, 100.0]), 0.2, mask=torch.tensor([1, 0]))
    assert loss.item() == pytest.approx(-1.0)


def test_value_loss_by_hand():
    v, old, ret = torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([2.0])
    assert F.value_loss(v, old, ret).item() == pytest.approx(0.5)  # .5 * (1 - 2)^2
    # clipped value 0 + clip(1, -.2, .2) = .2: .5 * max(1, (.2 - 2)^2 = 3.24) = 1.62
    assert F.value_loss(v, old, ret, clip_coef=0.2).item() == pytest.approx(1.62)


def test_masked_whiten_and_mean():
    x, m = torch.tensor([1.0, 3.0, 100.0]), torch.tensor([1.0, 1.0, 0.0])
    assert F.masked_mean(x, m).item() == pytest.approx(2.0)
    assert torch.allclose(F.masked_whiten(x, m), torch.tensor([-1.0, 1.0, 0.0]), atol=1e-4)


def test_explained_variance():
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert F.explained_variance(y, y) == pytest.approx(1.0)
    assert F.explained_variance(torch.full_like(y, 2.5), y) == pytest.approx(0.0)
    assert F.explained_variance(-y, y) < 0


def test_response_gae_by_hand_within_each_response():
    """Two responses, one row each (gamma 1, lambda 0.5); row 1 ends after 2 tokens."""
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.1, 2.0, 5.0]])
    values = torch.tensor([[0.5, 0.2, 0.4], [1.0, 0.5, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = F.response_gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # row 0: deltas -0.3, 0.2, 0.6 (the last token is terminal: 1 - 0.4); A = -0.05, 0.5, 0.6
    # row 1: deltas -0.4, 1.5 (2.0 - 0.5: nothing from the 9.0 past its end); A = 0.35, 1.5, then 0
    torch.testing.assert_close(adv, torch.tensor([[-0.05, 0.5, 0.6], [0.35, 1.5, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.45, 0.7, 1.0], [1.35, 2.0, 0.0]]))


def test_response_gae_bootstraps_nothing_past_a_response_end():
    """Whatever lies past a response's last token (padding, the next prompt's values) changes nothing."""
    rewards = torch.tensor([[0.3, -0.1, 2.0, 0.0, 0.0]])
    values = torch.tensor([[0.2, 0.1, -0.3, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    adv, ret = F.response_gae(rewards, values, mask, gamma=1.0, lam=0.95)
    junk_r, junk_v = rewards.clone(), values.clone()
    junk_r[0, 3:], junk_v[0, 3:] = 7.0, 100.0
    adv2, ret2 = F.response_gae(junk_r, junk_v, mask, gamma=1.0, lam=0.95)
    torch.testing.assert_close(adv, adv2)
    torch.testing.assert_close(ret, ret2)
    # the last token's target is its own reward: the score, with no value after it
    assert ret[0, 2].item() == pytest.approx(2.0)
    # with lambda = 1 and gamma = 1 the returns are the rewards-to-go of the response
    _, mc = F.response_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(mc, torch.tensor([[2.2, 1.9, 2.0, 0.0, 0.0]]))
