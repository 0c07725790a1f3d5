"""agents.reinforce: each rung's weights on hand-worked rollouts, the PPO link, and learning on the grid."""

import gymnasium as gym
import pytest
import torch

import textenv  # noqa: F401
from agents import functional as F
from agents.policies import MLPActorCritic
from agents.reinforce import REINFORCE, estimate_gradient, flat_grad, pg_weights, reinforce_loss, whole_episode_mask
from agents.rollout import RolloutCollector
from textenv.gridworld import policy_return


def t(*rows):
    """A (T, 1) float tensor from per-step values."""
    return torch.tensor(rows, dtype=torch.float32)[:, None]


# One sub-env, gamma = 0.5. Episode A is steps 0-2 (terminates at 2); episode B starts at 3 and is still
# running when the rollout ends, so the Monte Carlo rungs drop it.
REWARDS, ENDS = t(1, 2, 4, 8, 16), t(0, 0, 1, 0, 0)
VALUES, NEXT_VALUES = t(1, 2, 3, 5, 6), t(2, 3, 7, 6, 10)
GAMMA = 0.5


def weights(estimator, mask, lam=0.5):
    return pg_weights(estimator, REWARDS, VALUES, NEXT_VALUES, ENDS, ENDS, mask, GAMMA, lam)


def test_whole_episode_mask_drops_the_unfinished_tail():
    assert whole_episode_mask(ENDS, torch.ones_like(ENDS)).squeeze(1).tolist() == [1, 1, 1, 0, 0]


def test_whole_episode_mask_drops_a_head_that_began_before_the_rollout():
    ends = t(0, 1, 0, 0, 1, 0)
    mask = whole_episode_mask(ends, torch.ones_like(ends), in_progress=torch.tensor([True]))
    assert mask.squeeze(1).tolist() == [0, 0, 1, 1, 1, 0]
    fresh = whole_episode_mask(ends, torch.ones_like(ends), in_progress=torch.tensor([False]))
    assert fresh.squeeze(1).tolist() == [1, 1, 1, 1, 1, 0]


def test_whole_return_weighs_every_action_by_r_tau():
    # R(tau_A) = 1 + .5 * 2 + .25 * 4 = 3, the same for all three actions, past rewards included
    w, targets = weights("return", whole_episode_mask(ENDS, torch.ones_like(ENDS)))
    assert torch.allclose(w, t(3, 3, 3, 0, 0)) and targets is None


def test_reward_to_go_forgets_the_past():
    # G2 = 4 ; G1 = 2 + .5 * 4 = 4 ; G0 = 1 + .5 * 4 = 3
    w, targets = weights("reward_to_go", whole_episode_mask(ENDS, torch.ones_like(ENDS)))
    assert torch.allclose(w, t(3, 4, 4, 0, 0)) and targets is None


def test_baseline_subtracts_the_value_and_regresses_it_on_the_rewards_to_go():
    # G - V = 3 - 1, 4 - 2, 4 - 3 ; V's targets are G
    w, targets = weights("baseline", whole_episode_mask(ENDS, torch.ones_like(ENDS)))
    assert torch.allclose(w, t(2, 2, 1, 0, 0))
    assert torch.allclose(targets[:3], t(3, 4, 4))


def test_gae_bootstraps_the_unfinished_episode():
    # deltas: 1 + .5*2 - 1 = 1 ; 2 + .5*3 - 2 = 1.5 ; 4 - 3 = 1 (terminated) ; 8 + .5*6 - 5 = 6 ; 16 + .5*10 - 6 = 15
    # gamma * lambda = .25: A4 = 15 ; A3 = 6 + .25*15 = 9.75 ; A2 = 1 ; A1 = 1.5 + .25 = 1.75 ; A0 = 1 + .25*1.75
    w, targets = weights("gae", torch.ones_like(ENDS))
    assert torch.allclose(w, t(1.4375, 1.75, 1, 9.75, 15))
    assert torch.allclose(targets, w + VALUES)


def test_whole_return_after_a_next_step_reset_step():
    # NEXT_STEP autoreset: step 2 is the reset step (masked, reward 0). Episodes: 1 + .5*2 = 2 and 8 + .5*16 = 16.
    rewards, ends, mask = t(1, 2, 0, 8, 16), t(0, 1, 0, 0, 1), t(1, 1, 0, 1, 1)
    zeros = torch.zeros_like(rewards)
    w, _ = pg_weights("return", rewards, zeros, zeros, ends, ends, mask, GAMMA)
    assert torch.allclose(w, t(2, 2, 0, 16, 16))


def test_unknown_estimator_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="reward_to_go"):
        weights("q_learning", torch.ones_like(ENDS))
    with pytest.raises(ValueError, match="estimator must be one of"):
        REINFORCE(gym.make("GridWorld-v0"), estimator="rtg")


def test_ppo_surrogate_at_ratio_one_has_the_reinforce_gradient():
    # Lecture: PPO's importance-sampled, clipped objective is REINFORCE with advantages at its first step.
    torch.manual_seed(0)
    policy = torch.nn.Linear(3, 4)
    obs, actions, adv = torch.randn(32, 3), torch.randint(0, 4, (32,)), torch.randn(32)
    mask = (torch.rand(32) > 0.2).float()
    logprob = torch.distributions.Categorical(logits=policy(obs)).log_prob(actions)
    params = list(policy.parameters())
    g_ppo = flat_grad(F.policy_loss(logprob, logprob.detach(), adv, 0.2, mask)[0], params, retain_graph=True)
    g_pg = flat_grad(reinforce_loss(logprob, adv, mask), params)
    assert torch.allclose(g_ppo, g_pg, atol=1e-6)


def test_estimate_gradient_is_the_ascent_direction_of_the_sampled_objective():
    envs = gym.make_vec("GridWorld-v0", num_envs=8, vectorization_mode="vector_entry_point")
    torch.manual_seed(0)
    policy = MLPActorCritic(envs.single_observation_space, envs.single_action_space)
    rollout = RolloutCollector(envs, policy, 64, torch.device("cpu"), seed=0).collect()
    g = estimate_gradient(policy, rollout, "reward_to_go", gamma=0.99)
    n_actor = sum(p.numel() for p in policy.actor.parameters())
    assert g.shape == (sum(p.numel() for p in policy.parameters()),)
    assert g[n_actor:].abs().sum() == 0  # the critic plays no part in the policy gradient
    assert g.norm() > 0
    # A small step along g raises the surrogate sum_t log pi(a_t|s_t) G_t on this batch.
    mask = whole_episode_mask(rollout.ends, rollout.mask)
    w, _ = pg_weights("reward_to_go", rollout.rewards, rollout.values, rollout.next_values, rollout.terminated,
                      rollout.ends, mask, 0.99)

    def surrogate():
        with torch.no_grad():
            logprob, _, _ = policy.evaluate_actions(rollout.obs.reshape(-1), rollout.actions.reshape(-1))
        return -reinforce_loss(logprob, w.reshape(-1), mask.reshape(-1)).item()

    before = surrogate()
    theta = torch.nn.utils.parameters_to_vector(policy.parameters())
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(theta + 1e-3 * g / g.norm(), policy.parameters())
    assert surrogate() > before


def test_reinforce_gae_learns_the_grid():
    envs = gym.make_vec("GridWorld-v0", num_envs=64, vectorization_mode="vector_entry_point")
    agent = REINFORCE(envs, estimator="gae", n_steps=16, learning_rate=1e-2, gae_lambda=0.8, seed=0, device="cpu",
                      progress_bar=False)
    greedy = lambda: policy_return(lambda obs: agent.predict(obs, deterministic=True)[0])  # noqa: E731
    before = greedy()
    returns = []
    agent.learn(20_000, callback=lambda a, m: returns.append(m["episode_return"]))
    assert before < 99 and greedy() >= 99  # the meat, with at most the broom on the way
    assert sum(returns[-3:]) / 3 > 90  # the sampling policy too, not just its argmax
