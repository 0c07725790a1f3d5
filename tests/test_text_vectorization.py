"""TextGen-v0 under other vectorizers: Stable-Baselines3's make_vec_env (it asks for render_mode="rgb_array") and
Gymnasium's async mode (forked workers) after torch already ran in this process; the rgb_array frame."""

import numpy as np
import pytest
import torch

import gymnasium as gym
import textenv  # noqa: F401  (registers TextGen-v0)
from text_fixtures import *  # noqa: F401,F403  (fixtures: env_kwargs)
from textenv.text.env import TextGenEnv
from textenv.text.render import RGB_SIZE, text_image
from textenv.text.vector import TextGenVectorEnv


def test_sb3_make_vec_env_builds_and_steps_the_default_task():
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env("TextGen-v0", n_envs=2, seed=0)
    try:
        obs = venv.reset()
        assert obs["input_ids"].shape[0] == 2 and obs["attention_mask"].shape == obs["input_ids"].shape
        done_seen = False
        for _ in range(30):
            obs, rewards, dones, infos = venv.step(np.array([venv.action_space.sample() for _ in range(2)]))
            assert rewards.shape == (2,) and np.isfinite(rewards).all()
            done_seen |= bool(dones.any())
        assert done_seen  # episodes end (24 tokens at most) and the VecEnv resets them
        frames = venv.get_images()
        assert [f.shape for f in frames] == [(*RGB_SIZE, 3)] * 2 and frames[0].dtype == np.uint8
    finally:
        venv.close()


def test_rgb_array_frames(env_kwargs):
    env = TextGenEnv(**env_kwargs, render_mode="rgb_array")
    blank = env.render()  # before reset: a message, not an error
    assert blank.shape == (*RGB_SIZE, 3) and blank.dtype == np.uint8 and (blank < 255).any()
    env.reset(seed=0)
    start = env.render()
    env.step(5)
    after = env.render()
    assert after.shape == start.shape and not np.array_equal(after, start)  # the new token is drawn
    blue = (after[..., 2] > 150) & (after[..., 0] < 100)
    assert blue.any() and not ((start[..., 2] > 150) & (start[..., 0] < 100)).any()  # the completion is blue

    vec = TextGenVectorEnv(2, **env_kwargs, render_mode="rgb_array")
    vec.reset(seed=0)
    frames = vec.render()
    assert isinstance(frames, tuple) and [f.shape for f in frames] == [(*RGB_SIZE, 3)] * 2
    assert "rgb_array" in TextGenEnv.metadata["render_modes"] and "rgb_array" in TextGenVectorEnv.metadata["render_modes"]


def test_long_text_shows_its_last_lines():
    words = " ".join(f"word{i}" for i in range(400))
    frame = text_image(words, " END")
    assert frame.shape == (*RGB_SIZE, 3)
    # the last line holds the blue completion: the newest tokens are on screen
    assert ((frame[..., 2] > 150) & (frame[..., 0] < 100)).any()
    assert text_image("x" * 2000, "").shape == (*RGB_SIZE, 3)  # one word longer than a line is cut, not lost


@pytest.mark.timeout(120)
def test_async_make_vec_after_torch_ran_in_this_process(env_kwargs):
    """Forked workers used to hang at their first forward: torch's CPU thread pool does not survive a fork."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the parent's pool has 2 threads and runs them
    try:
        x = torch.randn(512, 512)
        (x @ x).sum().item()
        envs = gym.make_vec("TextGen-v0", num_envs=2, vectorization_mode="async",
                            **{**env_kwargs, "max_new_tokens": 3})
        try:
            obs, info = envs.reset(seed=0)
            assert obs["input_ids"].shape[0] == 2
            for _ in range(4):
                obs, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
                assert np.isfinite(rewards).all()
        finally:
            envs.close()
        assert torch.get_num_threads() == 2  # the parent keeps its threads
    finally:
        torch.set_num_threads(threads)


def test_forked_after_torch_flag_is_set_only_in_forked_children():
    import multiprocessing as mp

    assert textenv.forked_after_torch is False
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_report_fork_flag, args=(queue,))
    proc.start()
    proc.join(60)
    assert queue.get(timeout=10) == (True, 1)


def _report_fork_flag(queue):
    from textenv.text.loading import fork_safe_threads

    torch.set_num_threads(2)
    fork_safe_threads()
    queue.put((textenv.forked_after_torch, torch.get_num_threads()))


def test_auto_device_in_a_process_forked_after_cuda_started_is_the_cpu(monkeypatch):
    from rlcore.device import resolve_device

    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: True)
    with pytest.warns(UserWarning, match='forked after CUDA started in its parent.*"spawn"'):
        assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")  # an explicit device is the user's choice
