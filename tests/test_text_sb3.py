"""SB3VecEnvAdapter: a same-step Gymnasium vector env as a Stable-Baselines3 VecEnv."""

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from text_fixtures import *  # noqa: F403
from text_fixtures import PROMPTS, length_reward, make_tokenizer
from textenv.sb3 import SB3VecEnvAdapter
from textenv.text.config import TextGenConfig
from textenv.text.env import TextGenEnv
from textenv.text.vector import TextGenVectorEnv


def test_step_results_match_the_vector_env(env_kwargs):
    kw = {**env_kwargs, "reward": length_reward}
    vec = TextGenVectorEnv(3, **kw)
    adapter = SB3VecEnvAdapter(TextGenVectorEnv(3, **kw))
    adapter.seed(7)
    obs_a = adapter.reset()
    obs_v, info_v = vec.reset(seed=7)
    for k in obs_v:
        np.testing.assert_array_equal(obs_a[k], obs_v[k])
    assert [i["prompt"] for i in adapter.reset_infos] == info_v["prompt"].tolist()
    eos = vec.eos_token_id
    gen = np.random.default_rng(0)
    done_seen = 0
    for t in range(14):
        acts = gen.integers(3, 38, 3)
        acts[gen.random(3) < 0.25] = eos
        obs_a, rew_a, dones, infos = adapter.step(acts)
        obs_v, rew_v, term, trunc, info = vec.step(acts)
        for k in obs_v:
            np.testing.assert_array_equal(obs_a[k], obs_v[k])
        np.testing.assert_allclose(rew_a, rew_v, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(dones, term | trunc)
        for i in range(3):
            assert infos[i]["TimeLimit.truncated"] == bool(trunc[i] and not term[i])
            if dones[i]:
                done_seen += 1
                for k in obs_v:
                    np.testing.assert_array_equal(infos[i]["terminal_observation"][k], info["final_obs"][i][k])
                assert infos[i]["rm_score"] == info["final_info"]["rm_score"][i]
                assert infos[i]["completion"] == info["final_info"]["completion"][i]
                assert adapter.reset_infos[i]["prompt"] == info["prompt"][i]
            else:
                assert "terminal_observation" not in infos[i]
                assert infos[i]["ref_logprob"] == pytest.approx(info["ref_logprob"][i])
    assert done_seen >= 3


def test_attributes_and_methods(env_kwargs):
    adapter = SB3VecEnvAdapter(TextGenVectorEnv(2, **env_kwargs, render_mode="ansi"))
    assert adapter.get_attr("render_mode") == ["ansi", "ansi"]
    assert adapter.get_attr("kl_coef") == [TextGenConfig.kl_coef, TextGenConfig.kl_coef]  # the default beta
    adapter.set_attr("kl_coef", 0.2)
    assert adapter.vec_env.kl_coef == 0.2
    with pytest.raises(ValueError, match="all rows at once"):
        adapter.set_attr("kl_coef", 0.1, indices=[0])
    adapter.reset()
    assert adapter.env_method("render") == [adapter.vec_env.render()] * 2
    assert adapter.env_is_wrapped(object) == [False, False]


def test_rejects_next_step_autoreset(env_kwargs):
    sync = SyncVectorEnv([lambda: TextGenEnv(**env_kwargs)], autoreset_mode=AutoresetMode.NEXT_STEP)
    with pytest.raises(ValueError, match="same-step autoreset"):
        SB3VecEnvAdapter(sync)


PAID_WORDS = {"good", "great", "fine", "fun", "lovely", "loved", "liked"}


def paid_word_reward(prompts: list[str], completions: list[str]):
    """1 for a completion that is one of ``PAID_WORDS``, else 0."""
    return [1.0 if c.strip() in PAID_WORDS else 0.0 for c in completions]


def test_sb3_ppo_learns_through_the_adapter(lm_dir):
    """SB3's own PPO, rolling out and updating on the adapter, learns a one-token task: say a paid word.

    7 of the 64 tokens are paid, so a policy starts with about 0.11 of its probability on them; 1024
    timesteps move it above 0.9 on seeds 0-19 except one (0.66), so 0.5 leaves room to spare.
    """
    from stable_baselines3 import PPO

    paid_ids = [make_tokenizer().convert_tokens_to_ids(w) for w in sorted(PAID_WORDS)]
    adapter = SB3VecEnvAdapter(TextGenVectorEnv(4, model=str(lm_dir), reward=paid_word_reward, prompts=list(PROMPTS),
                                                max_new_tokens=1, max_prompt_tokens=6, kl_coef=0.0, device="cpu"))
    model = PPO("MultiInputPolicy", adapter, n_steps=32, batch_size=64, n_epochs=4, learning_rate=1e-2,
                ent_coef=0.0, seed=0, device="cpu", policy_kwargs={"net_arch": [16]})
    obs = adapter.reset()

    def paid_probability() -> float:
        obs_t, _ = model.policy.obs_to_tensor(obs)
        with torch.no_grad():
            probs = model.policy.get_distribution(obs_t).distribution.probs  # (4, 64)
        return float(probs[:, paid_ids].sum(1).mean())

    assert paid_probability() < 0.2
    model.learn(total_timesteps=1024)
    assert model.num_timesteps >= 1024
    assert paid_probability() > 0.5
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (4,) and ((0 <= action) & (action < 64)).all()
