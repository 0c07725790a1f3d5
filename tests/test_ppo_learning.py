"""agents.PPO as a user relies on it: it solves the grid, is reproducible, runs in both autoreset modes,
and its checkpoints round-trip, fail loudly when broken, and are written atomically."""

import os

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import textenv  # noqa: F401  (registers GridWorld-v0)
from agents import PPO, PPOConfig
from agents.rollout import autoreset_mode
from textenv.gridworld import policy_return, value_iteration

# The grid settings of examples/gridworld_common.py: 64 cats x 16 steps per update, a fast learning rate, GAE lambda
# 0.8 and no value clipping (returns are ~100).
GRID = PPOConfig(n_steps=16, learning_rate=3e-3, gae_lambda=0.8, clip_vloss=False, progress_bar=False)


def grid_envs(n=64):
    return gym.make_vec("GridWorld-v0", num_envs=n, vectorization_mode="vector_entry_point")


def greedy_return(agent) -> float:
    return policy_return(lambda obs: agent.predict(obs, deterministic=True)[0])


def all_states():
    return np.arange(25)


def test_ppo_reaches_the_optimal_greedy_return():
    optimum = policy_return(value_iteration().policy)  # +100: down 4, right 4, no broom, no bathtub
    agent = PPO(grid_envs(), seed=0, device="cpu", config=GRID)
    returns = []
    agent.learn(25_000, callback=lambda a, m: returns.append(m["episode_return"]))
    assert greedy_return(agent) == optimum
    assert np.mean(returns[-3:]) > 97  # the sampling policy is nearly there too


def _short_run(seed):
    agent = PPO(grid_envs(8), seed=seed, device="cpu", config=GRID)
    metrics = []
    agent.learn(6 * 16 * 8, callback=lambda a, m: metrics.append(m))
    keep = lambda m: {k: v for k, v in m.items() if not k.endswith("_s") and k != "steps_per_s"}  # noqa: E731
    return agent, [keep(m) for m in metrics]


def test_seeded_cpu_run_is_reproducible():
    (a, ma), (b, mb) = _short_run(7), _short_run(7)
    for (name, pa), pb in zip(a.policy.state_dict().items(), b.policy.state_dict().values()):
        assert torch.equal(pa, pb), name
    np.testing.assert_equal(ma, mb)  # every metric of every iteration (NaN == NaN here)
    c, _ = _short_run(8)
    assert not all(torch.equal(x, y) for x, y in zip(a.policy.parameters(), c.policy.parameters()))


@pytest.mark.parametrize(
    "make_env, n_steps, budget, mode",
    [
        (lambda: gym.make("GridWorld-v0"), 128, 6_000, AutoresetMode.NEXT_STEP),  # a SyncVectorEnv of one
        (lambda: grid_envs(64), 16, 12_000, AutoresetMode.SAME_STEP),  # the native vector env
    ],
    ids=["single-env-next-step", "native-vector-same-step"],
)
def test_ppo_learns_on_a_single_env_and_on_the_native_vector_env(make_env, n_steps, budget, mode):
    agent = PPO(make_env(), seed=0, device="cpu", config=GRID, n_steps=n_steps)
    returns = []
    agent.learn(budget, callback=lambda a, m: returns.append(m["episode_return"]))
    assert autoreset_mode(agent.env) == mode  # both modes are covered
    assert np.nanmean(returns[:2]) < 60 and np.nanmean(returns[-3:]) > 75  # it learned to find the meat
    assert greedy_return(agent) >= 99  # and its greedy policy goes there


@pytest.fixture
def trained(tmp_path):
    agent = PPO(grid_envs(8), seed=0, device="cpu", config=GRID)
    agent.learn(512)
    return agent, agent.save(tmp_path / "agent.pt")


def test_save_load_round_trip_predicts_the_same(trained):
    agent, path = trained
    loaded = PPO.load(path, env=grid_envs(8), device="cpu")
    assert np.array_equal(agent.predict(all_states(), deterministic=True)[0],
                          loaded.predict(all_states(), deterministic=True)[0])
    obs = torch.as_tensor(all_states())
    assert torch.equal(agent.policy(obs)[0], loaded.policy(obs)[0])  # the same distribution, not just argmax
    assert loaded.num_timesteps == agent.num_timesteps and loaded.config == agent.config
    assert PPO.load(path).predict(3, deterministic=True)[0] == agent.predict(3, deterministic=True)[0]  # no env
    loaded.learn(128)  # and it can keep training


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*nothing.pt"):
        PPO.load(tmp_path / "nothing.pt")


def test_load_random_bytes(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        PPO.load(path)


def test_load_truncated_file(trained):
    _, path = trained
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable checkpoint .*corrupt or truncated"):
        PPO.load(path)


def test_load_another_format(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"format": "something.else", "policy": {}}, path)
    with pytest.raises(ValueError, match="'something.else' checkpoint, expected a 'textenv.agents.PPO'"):
        PPO.load(path)


def test_load_with_another_envs_spaces_names_the_mismatch(tmp_path):
    cartpole = PPO(gym.make("CartPole-v1"), seed=0, device="cpu", config=GRID)
    path = cartpole.save(tmp_path / "cartpole.pt")
    with pytest.raises(ValueError) as err:
        PPO.load(path, env=grid_envs(4))
    message = str(err.value)
    assert "observation space" in message and "Box" in message and "Discrete" in message


def test_save_is_atomic(trained, monkeypatch):
    agent, path = trained
    before = path.read_bytes()
    agent.learn(128)  # the agent moves on; its next save will fail half-way

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        agent.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the previous checkpoint is intact
    assert os.listdir(path.parent) == [path.name]  # and no temporary file is left behind
    PPO.load(path)
