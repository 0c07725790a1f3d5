"""agents.lm.LMActorCritic: acting, re-scoring whole episodes in one forward, and PPO's first ratio of 1."""

import copy

import numpy as np
import torch
from text_fixtures import *  # noqa: F401,F403
from text_fixtures import PROMPTS, length_reward, make_lm, make_rm

from agents import PPO
from agents.lm import LMActorCritic, logprob_and_entropy, plan_sequences
from agents.rlhf import rlhf_ppo_config
from textenv.text.sampling import SamplingConfig
from textenv.text.vector import TextGenVectorEnv


def generate(policy, n_rows=4, n_steps=6, prompt_lens=(2, 5, 3, 1), seed=0):
    """Act for n_steps from random left-padded prompts; returns the flat batch (obs, actions, logprobs, values)."""
    torch.manual_seed(seed)
    L = max(prompt_lens) + n_steps
    ids = torch.zeros(n_rows, L, dtype=torch.long)
    mask = torch.zeros(n_rows, L, dtype=torch.long)
    for i, n in enumerate(prompt_lens):
        ids[i, L - n:] = torch.randint(3, 40, (n,))
        mask[i, L - n:] = 1
    steps = []
    for _ in range(n_steps):
        obs = {"input_ids": ids.clone(), "attention_mask": mask.clone()}
        action, logprob, value = policy.act(obs)
        steps.append((obs, action, logprob, value))
        ids = torch.cat([ids[:, 1:], action[:, None]], 1)
        mask = torch.cat([mask[:, 1:], torch.ones(n_rows, 1, dtype=torch.long)], 1)
    obs = {k: torch.cat([s[0][k] for s in steps]) for k in ("input_ids", "attention_mask")}
    return obs, *(torch.cat([s[i] for s in steps]) for i in (1, 2, 3))


def naive_scores(policy, obs, actions):
    """One full forward per row over its own unpadded text: the reference answer."""
    out = []
    for i in range(len(actions)):
        m = obs["attention_mask"][i].bool()
        ids = obs["input_ids"][i][m][None]
        logits = policy.model(input_ids=ids).logits[:, -1]
        out.append(logprob_and_entropy(policy.sampling.sampling_logits(logits), actions[i:i + 1])[0])
    return torch.cat(out)


def test_value_head_starts_at_zero():
    policy = LMActorCritic(make_lm(), device="cpu")
    assert torch.count_nonzero(policy.value_head.weight) == 0 and policy.value_head.bias.item() == 0.0
    obs, actions, _, values = generate(policy)
    assert torch.all(values == 0)
    assert torch.all(policy.evaluate_actions(obs, actions)[2] == 0)


def test_evaluate_actions_matches_rollout_and_per_row_scoring():
    policy = LMActorCritic(make_lm(), sampling=SamplingConfig(temperature=0.8), device="cpu")
    obs, actions, logprobs, _ = generate(policy)
    perm = torch.randperm(len(actions))  # any order: the chains are found from the tokens
    obs = {k: v[perm] for k, v in obs.items()}
    actions, logprobs = actions[perm], logprobs[perm]
    with torch.no_grad():
        lp, ent, _ = policy.evaluate_actions(obs, actions)
        per_row = torch.cat([policy.evaluate_actions({k: v[i:i + 1] for k, v in obs.items()}, actions[i:i + 1])[0]
                             for i in range(len(actions))])
        naive = naive_scores(policy, obs, actions)
    torch.testing.assert_close(lp, logprobs, atol=1e-5, rtol=0)  # KV-cached acting == one forward per episode
    torch.testing.assert_close(lp, per_row, atol=1e-5, rtol=0)
    torch.testing.assert_close(lp, naive, atol=1e-5, rtol=0)
    assert torch.isfinite(ent).all() and (ent > 0).all()


def test_one_forward_per_episode():
    obs = {"input_ids": torch.tensor([[0, 5, 6], [5, 6, 7], [0, 0, 9], [0, 9, 4]]),
           "attention_mask": torch.tensor([[0, 1, 1], [1, 1, 1], [0, 0, 1], [0, 1, 1]])}
    actions = torch.tensor([7, 8, 4, 3])
    plan = plan_sequences(obs["input_ids"], obs["attention_mask"], actions)
    # rows 0 -> 1 form one episode ("5 6 7 8"), rows 2 -> 3 another ("9 4 3"): two leaves
    assert plan.ids.shape == (2, 4)
    assert plan.leaf.tolist()[0] == plan.leaf.tolist()[1] and plan.leaf.tolist()[2] == plan.leaf.tolist()[3]
    leaf0 = plan.ids[plan.leaf[0]].tolist()
    assert leaf0 == [5, 6, 7, 8]
    assert plan.col.tolist()[:2] == [1, 2]  # logits of "6" predict 7, of "7" predict 8


def test_top_k_entropy_and_gradients_are_finite():
    policy = LMActorCritic(make_lm(), sampling=SamplingConfig(top_k=3), device="cpu")
    obs, actions, logprobs, _ = generate(policy)
    lp, ent, values = policy.evaluate_actions(obs, actions)
    assert torch.isfinite(lp).all() and torch.isfinite(ent).all()
    assert (ent <= np.log(3) + 1e-5).all()  # only 3 tokens have mass
    (lp.sum() + ent.sum() + values.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in policy.parameters() if p.grad is not None)


def test_dropout_stays_off_in_train_mode():
    policy = LMActorCritic(make_lm(resid_pdrop=0.5, attn_pdrop=0.5, embd_pdrop=0.5), device="cpu")
    policy.train()
    assert policy.training and not policy.model.training
    obs, actions, _, _ = generate(policy)
    a = policy.evaluate_actions(obs, actions)[0]
    b = policy.evaluate_actions(obs, actions)[0]
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_separate_critic_from_reward_model_trunk():
    rm = make_rm()
    before = copy.deepcopy(rm.state_dict())
    policy = LMActorCritic(make_lm(), critic="separate", critic_model=rm, device="cpu")
    obs, actions, _, values = generate(policy)
    with torch.no_grad():
        policy.value_head.weight.fill_(0.1)
        acting_values = policy(obs)[1]
    _, _, eval_values = policy.evaluate_actions(obs, actions)
    torch.testing.assert_close(eval_values, acting_values, atol=1e-5, rtol=0)
    eval_values.sum().backward()
    assert all(p.grad is None for p in policy.model.parameters())  # the policy shares nothing with the critic
    torch.optim.SGD(policy.parameters(), lr=1.0).step()
    for k, v in rm.state_dict().items():
        torch.testing.assert_close(v, before[k])  # the reward model itself is never trained


def test_loads_any_causal_lm_by_path(lm_dir):
    policy = LMActorCritic(str(lm_dir), device="cpu")
    obs, actions, logprobs, _ = generate(policy)
    assert actions.max() < policy.model.config.vocab_size


def make_env(lm_dir, policy, n=4, stop_at_eos=False):
    return TextGenVectorEnv(num_envs=n, model=str(lm_dir), reward=length_reward, prompts=list(PROMPTS),
                            max_new_tokens=5, max_prompt_tokens=6, temperature=0.9, top_k=20, device="cpu",
                            policy=policy, stop_at_eos=stop_at_eos)


def test_env_and_agent_share_one_forward_per_token(lm_dir):
    policy = LMActorCritic(str(lm_dir), sampling=SamplingConfig(temperature=0.9, top_k=20), device="cpu")
    env = make_env(lm_dir, policy)
    assert env.sampling == policy.sampling
    obs, _ = env.reset(seed=0)
    stats = policy.incremental.stats
    for t in range(9):  # episodes of 5 tokens: a reset (prefill) at step 5, the rest KV-cached decodes
        action, _, _ = policy.act({k: torch.as_tensor(v) for k, v in obs.items()})
        obs, _, _, _, info = env.step(action.numpy())
    assert stats["memo_hits"] == 9  # the env's KL read the agent's forward
    assert stats["forwards"] == 9  # one policy forward per generated token, not two
    assert stats["prefill_rows"] == 8 and stats["decode_rows"] == 7 * 4
    assert np.isfinite(info["kl"]).all()


def test_ppo_first_ratio_is_exactly_one(lm_dir, monkeypatch):
    """fp32, through agents.PPO.update: the first minibatch re-scores the rollout with the rollout's policy."""
    import agents.functional as F

    policy = LMActorCritic(str(lm_dir), sampling=SamplingConfig(temperature=0.9, top_k=20), device="cpu")
    env = make_env(lm_dir, policy, n=4, stop_at_eos=True)
    agent = PPO(env, policy=policy, seed=0, device="cpu",
                config=rlhf_ppo_config(n_steps=8, n_minibatches=2, n_epochs=2, learning_rate=1e-3))
    calls = []
    original = F.policy_loss

    def recording(logprob, old_logprob, *args, **kwargs):
        calls.append((logprob.detach().clone(), old_logprob.clone()))
        return original(logprob, old_logprob, *args, **kwargs)

    monkeypatch.setattr(F, "policy_loss", recording)
    agent.learn(8 * 4)
    logprob, old = calls[0]
    torch.testing.assert_close(logprob, old, atol=1e-5, rtol=0)
    assert (logprob - old).exp().sub(1).abs().max() < 1e-5  # the ratio
    assert len(calls) == 4
    assert any((lp - o).abs().max() > 1e-4 for lp, o in calls[1:])  # the update did move the policy
