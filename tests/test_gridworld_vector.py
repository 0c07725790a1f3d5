"""GridWorldVectorEnv behaves exactly like SyncVectorEnv over single envs, slips and autoresets included."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import textenv  # noqa: F401  (registers GridWorld-v0)
from textenv.gridworld import GridWorldVectorEnv

SMALL_MAP = "C.B\n.T.\n..M"  # short episodes, so terminations, truncations and autoresets all happen


def make_pair(num_envs, max_episode_steps, **kwargs):
    """The native vector env and SyncVectorEnv (SAME_STEP) over gym.make's single envs, alike."""
    native = gym.make_vec(
        "GridWorld-v0",
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        max_episode_steps=max_episode_steps,
        **kwargs,
    )
    assert native.unwrapped.max_episode_steps == max_episode_steps
    sync = SyncVectorEnv(
        [lambda: gym.make("GridWorld-v0", max_episode_steps=max_episode_steps, **kwargs) for _ in range(num_envs)],
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    return native, sync


@pytest.mark.parametrize("slip_prob", [0.0, 0.3, 1.0])
def test_step_by_step_equivalence_with_sync_vector_env(slip_prob):
    # A 12-step limit makes truncations (and truncation on a terminating step) common too.
    native, sync = make_pair(16, layout=SMALL_MAP, slip_prob=slip_prob, max_episode_steps=12)
    assert data_equivalence(native.reset(seed=5), sync.reset(seed=5))
    actions = np.random.default_rng(0).integers(0, 4, size=(400, 16))
    actions[np.random.default_rng(1).random((400, 16)) < 0.6] = 0  # mostly "up": long episodes
    terminations = truncations = 0
    for t, action in enumerate(actions):
        if t == 250:  # an unseeded reset mid-run continues every copy's slip stream
            assert data_equivalence(native.reset(), sync.reset())
        got, want = native.step(action), sync.step(action)
        assert data_equivalence(got, want, exact=True), f"step {t}: {got} != {want}"
        terminations, truncations = terminations + got[2].sum(), truncations + got[3].sum()
    assert terminations > 50 and truncations > 50
    native.close(), sync.close()


def test_truncation_at_100_steps_through_make_vec():
    envs = gym.make_vec("GridWorld-v0", num_envs=4096, vectorization_mode="vector_entry_point")
    assert isinstance(envs.unwrapped, GridWorldVectorEnv)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    envs.reset(seed=0)
    up = np.zeros(4096, dtype=np.int64)
    for _ in range(99):
        obs, rewards, terminated, truncated, info = envs.step(up)
        assert not truncated.any() and info == {}
    obs, rewards, terminated, truncated, info = envs.step(up)
    assert truncated.all() and not terminated.any()
    assert info["_final_obs"].all() and list(info["final_obs"][:3]) == [0, 0, 0]
    assert info["final_info"] == {} and info["_final_info"].all()


def test_seed_list_matches_single_envs():
    open_field = "C....\n.....\n....."  # nothing ends an episode, so the copies never autoreset
    native = GridWorldVectorEnv(num_envs=3, layout=open_field, slip_prob=0.5)
    native.reset(seed=[7, 100, 3])
    singles = [gym.make("GridWorld-v0", layout=open_field, slip_prob=0.5) for _ in range(3)]
    for env, seed in zip(singles, [7, 100, 3]):
        env.reset(seed=seed)
    for action in [1, 3, 1, 3, 1, 3]:
        obs = native.step(np.full(3, action))[0]
        assert obs.tolist() == [env.step(action)[0] for env in singles]


def test_observation_and_action_spaces():
    envs = GridWorldVectorEnv(num_envs=8)
    assert envs.single_observation_space == gym.spaces.Discrete(25)
    assert envs.single_action_space == gym.spaces.Discrete(4)
    obs, info = envs.reset(seed=0)
    assert obs in envs.observation_space and obs.dtype == np.int64 and info == {}
    rows, cols = envs.to_position(np.array([0, 7, 24]))
    assert rows.tolist() == [0, 1, 4] and cols.tolist() == [0, 2, 4]


def test_render_returns_one_frame_per_copy():
    envs = GridWorldVectorEnv(num_envs=2, render_mode="ansi")
    envs.reset(seed=0)
    envs.step(np.array([1, 3]))
    assert envs.render() == (".B...\nC....\n.....\n..T..\n....M\n", ".C...\n.....\n.....\n..T..\n....M\n")
    frames = GridWorldVectorEnv(num_envs=2, render_mode="rgb_array", cell_px=8)
    frames.reset(seed=0)
    assert [f.shape for f in frames.render()] == [(40, 40, 3)] * 2


def test_bad_actions():
    envs = GridWorldVectorEnv(num_envs=4)
    with pytest.raises(RuntimeError, match=r"before reset\(\)"):
        envs.step(np.zeros(4, dtype=np.int64))
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(4,\).*got dtype int64 and shape \(3,\)"):
        envs.step(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match=r"integer array.*got dtype float64"):
        envs.step(np.zeros(4))
    with pytest.raises(ValueError, match=r"actions must be in \{0, 1, 2, 3\}.*got \[4\]"):
        envs.step(np.array([0, 1, 4, 2]))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="num_envs must be an int in"):
        GridWorldVectorEnv(num_envs=0)
    with pytest.raises(ValueError, match=r"slip_prob must be in \[0, 1\]"):
        GridWorldVectorEnv(num_envs=2, slip_prob=2.0)
    with pytest.raises(ValueError, match="2 cats"):
        GridWorldVectorEnv(num_envs=2, layout="CC")
