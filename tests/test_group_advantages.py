"""The critic-free rungs and DPO as pure functions, on numbers worked by hand."""

import math

import numpy as np
import pytest
import torch

from agents import functional as F


def test_rloo_baseline_is_the_mean_of_the_other_responses_to_the_same_prompt():
    returns = torch.tensor([1.0, 2.0, 3.0, 6.0])
    # groups of 2: each response's baseline is the other one's return
    assert F.rloo_advantages(returns, 2).tolist() == [-1.0, 1.0, -3.0, 3.0]
    # one group of 4: 1 - (2 + 3 + 6) / 3 and 6 - (1 + 2 + 3) / 3
    got = F.rloo_advantages(returns, 4)
    torch.testing.assert_close(got, torch.tensor([1 - 11 / 3, 2 - 10 / 3, 3 - 3.0, 6 - 2.0]))
    assert float(got.sum()) == pytest.approx(0.0, abs=1e-6)
    assert returns.tolist() == [1.0, 2.0, 3.0, 6.0]  # inputs untouched


def test_grpo_normalises_within_each_group_with_the_unbiased_std():
    returns = torch.tensor([1.0, 2.0, 3.0, 6.0, 5.0, 5.0, 5.0, 5.0])
    got = F.grpo_advantages(returns, 4)
    std = math.sqrt((4 + 1 + 0 + 9) / 3)  # deviations from the mean 3: -2, -1, 0, 3
    expected = [d / (std + 1e-4) for d in (-2, -1, 0, 3)] + [0.0] * 4  # a group of equal returns: 0
    torch.testing.assert_close(got, torch.tensor(expected))


@pytest.mark.parametrize("fn", [F.rloo_advantages, F.grpo_advantages])
@pytest.mark.parametrize("returns,k", [(torch.ones(6), 4), (torch.ones(4), 1), (torch.ones(2, 2), 2)],
                         ids=["not-whole-groups", "group-of-one", "not-flat"])
def test_group_advantages_refuse_batches_that_are_not_whole_groups(fn, returns, k):
    with pytest.raises(ValueError, match="whole groups of group_size >= 2"):
        fn(returns, k)


def test_kl_loss_is_k3_of_the_reference_ratio_and_zero_at_the_reference():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -2.0])
    r = math.exp(-1.5 + 1.0)  # pi_ref / pi at the first token
    assert float(F.kl_loss(logp, ref)) == pytest.approx(((r - 1 - math.log(r)) + 0.0) / 2, rel=1e-6)
    assert float(F.kl_loss(ref, ref)) == 0.0
    # masked tokens do not count
    assert float(F.kl_loss(logp, ref, torch.tensor([0.0, 1.0]))) == 0.0


def test_dpo_loss_on_hand_worked_numbers():
    chosen, rejected = torch.tensor([-10.0, -8.0]), torch.tensor([-11.0, -7.0])
    ref_chosen, ref_rejected = torch.tensor([-12.0, -8.0]), torch.tensor([-10.0, -8.0])
    loss, info = F.dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.5)
    # pair 1: r_chosen = 0.5 * 2 = 1, r_rejected = 0.5 * -1 = -0.5, margin 1.5
    # pair 2: r_chosen = 0,             r_rejected = 0.5 * 1 = 0.5,  margin -0.5
    expected = (math.log1p(math.exp(-1.5)) + math.log1p(math.exp(0.5))) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(info["reward_margin"]) == pytest.approx(0.5)
    assert float(info["accuracy"]) == 0.5
    assert float(info["chosen_reward"]) == pytest.approx(0.5) and float(info["rejected_reward"]) == pytest.approx(0.0)


def test_dpo_gradient_raises_the_chosen_and_lowers_the_rejected_response():
    chosen, rejected = torch.tensor([-5.0], requires_grad=True), torch.tensor([-5.0], requires_grad=True)
    loss, _ = F.dpo_loss(chosen, rejected, torch.tensor([-5.0]), torch.tensor([-5.0]), beta=0.1)
    loss.backward()
    assert chosen.grad.item() < 0 < rejected.grad.item()  # descent raises log pi(chosen), lowers log pi(rejected)


# --------------------------------------------------------------------------- groups in the env and the loop
from text_fixtures import PROMPTS  # noqa: E402

from agents.lm import LMActorCritic  # noqa: E402
from agents.ppo_update import ppo_update  # noqa: E402
from agents.rlhf import RLHFConfig, rlhf_ppo_config, train_rlhf  # noqa: E402
from textenv.text.config import TextGenConfig  # noqa: E402
from agents.rlhf.loop import group_advantages  # noqa: E402
from agents.rlhf.responses import collect_responses, score_responses  # noqa: E402
from textenv.text.vector import TextGenVectorEnv  # noqa: E402

MANY_PROMPTS = [f"{p} {w}" for p in PROMPTS for w in ("good", "bad", "long", "short")]


def char_reward(prompts, completions):
    """A reward that differs between responses of the same length: their number of characters."""
    return [float(len(c)) for c in completions]


def _env(n=8, policy=None):
    """The embedded SFT model (varied samples) on made-up prompts, paid by ``char_reward``."""
    return TextGenVectorEnv(num_envs=n, reward=char_reward, prompts=MANY_PROMPTS, max_new_tokens=5,
                            max_prompt_tokens=8, device="cpu", policy=policy)


def test_group_size_reset_option_gives_each_group_of_rows_one_prompt():
    env = _env()
    _, info = env.reset(seed=3, options={"group_size": 4})
    prompts = list(info["prompt"])
    assert prompts[:4] == [prompts[0]] * 4 and prompts[4:] == [prompts[4]] * 4
    assert prompts[0] != prompts[4]  # seeded draws: groups 0 and 1 draw with seeds 3 and 7 (here: different)
    _, again = env.reset(seed=3, options={"group_size": 4})
    assert list(again["prompt"]) == prompts  # reproducible from the seed


@pytest.mark.parametrize("options,match", [
    ({"group_size": 3}, "divides num_envs=8"),
    ({"group_size": 0}, "int >= 1"),
    ({"group_size": 2.0}, "int >= 1"),
    ({"group_size": 2, "prompt": "the movie was"}, "cannot be combined"),
    ({"group_size": 4, "reset_mask": np.array([True] * 2 + [False] * 6)}, "whole groups"),
])
def test_a_bad_group_reset_changes_nothing(options, match):
    env = _env()
    obs, _ = env.reset(seed=1)
    with pytest.raises(ValueError, match=match):
        env.reset(seed=2, options=options)
    np.testing.assert_array_equal(env.core.observe()["input_ids"], obs["input_ids"])


def test_rloo_update_raises_the_responses_that_beat_their_group():
    from textenv.default import sft_path

    torch.manual_seed(0)
    policy = LMActorCritic(sft_path(), device="cpu")
    env = _env(policy=policy)
    batch = collect_responses(env, policy, 0.0, 0, torch.Generator().manual_seed(0), torch.device("cpu"),
                              group_size=4)
    advantages = group_advantages("rloo", batch.rewards, batch.response_mask, 4)
    assert (advantages != 0).any()
    cfg = rlhf_ppo_config(n_epochs=1, n_minibatches=1, norm_adv=False, learning_rate=1e-3, max_grad_norm=100.0)
    data = {"logprobs": batch.logprobs, "values": batch.values, "advantages": advantages, "returns": batch.values,
            "mask": batch.response_mask}
    rows = torch.arange(8)
    before = (score_responses(policy, batch, rows)[0] * batch.response_mask).sum(1).detach()
    head = [p.detach().clone() for p in policy.value_head.parameters()]
    update = ppo_update(policy, torch.optim.Adam(policy.parameters(), lr=1e-3), cfg, data,
                        lambda: [rows], lambda r: score_responses(policy, batch, r), "test")
    after = (score_responses(policy, batch, rows)[0] * batch.response_mask).sum(1).detach()
    per_response = advantages.sum(1) / batch.response_mask.sum(1)
    # the responses above their group's leave-one-out baseline became likelier, those below less likely
    assert float((per_response * (after - before)).sum()) > 0
    assert update["value_loss"] == 0.0  # no critic: the value head is not trained
    for p, q in zip(policy.value_head.parameters(), head):
        torch.testing.assert_close(p.detach(), q)


@pytest.mark.parametrize("advantage,kl_in", [("rloo", "reward"), ("grpo", "loss")])
def test_train_rlhf_runs_the_critic_free_rungs(advantage, kl_in):
    config = RLHFConfig(env=TextGenConfig(max_new_tokens=4), num_envs=8, responses=16, seed=0, n_samples=8,
                        advantage=advantage, kl_in=kl_in, group_size=4, ppo=rlhf_ppo_config(norm_adv=False))
    history = train_rlhf(config).history
    assert len(history) == 2
    for h in history:
        prompts = [s["prompt"] for s in h["samples"]]
        assert prompts[:4] == [prompts[0]] * 4 and prompts[4:] == [prompts[4]] * 4
        assert h["value_loss"] == 0.0 and math.isnan(h["explained_variance"])
        assert h["kl_coef"] == pytest.approx(config.env.kl_coef, rel=0.01)  # the controller's beta, reported
    assert ("kl_loss" in history[-1]) == (kl_in == "loss")


@pytest.mark.parametrize("kw,match", [
    ({"advantage": "ppo"}, "advantage must be"),
    ({"kl_in": "both"}, "kl_in must be"),
    ({"advantage": "rloo", "group_size": 3}, "divide num_envs=8"),
    ({"advantage": "grpo", "group_size": 1}, "group_size must be >= 2"),
])
def test_bad_critic_free_settings_are_refused_before_any_work(kw, match):
    with pytest.raises(ValueError, match=match):
        RLHFConfig(num_envs=8, **kw).check()


def test_reinforce_group_rung_is_rloo_over_the_whole_episodes_of_the_batch():
    from agents.reinforce import pg_weights, whole_episode_mask

    # column 0: two whole episodes (returns 1 and 3); column 1: one whole episode (return 2), then a cut one
    rewards = torch.tensor([[0.0, 2.0], [1.0, 0.0], [0.0, 5.0], [3.0, 0.0]])
    ends = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    mask = whole_episode_mask(ends, torch.ones(4, 2))
    weights, targets = pg_weights("group", rewards, torch.zeros(4, 2), torch.zeros(4, 2), ends, ends, mask, gamma=1.0)
    rloo = F.rloo_advantages(torch.tensor([1.0, 3.0, 2.0]), 3)  # -1.5, 1.5, 0
    expected = torch.tensor([[rloo[0], rloo[2]], [rloo[0], 0.0], [rloo[1], 0.0], [rloo[1], 0.0]])
    torch.testing.assert_close(weights, expected)
    assert targets is None  # no critic
