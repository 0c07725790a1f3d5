"""Wrappers for the TextGen vector env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


def step_values(info: dict, done: np.ndarray, key: str) -> np.ndarray | None:
    """This step's value of a per-step info key for every row (N,), or None when the env reports no ``key``.

    With same-step autoreset a row that ended has its last step's values in ``info["final_info"]`` and
    its new episode's reset info at the top level, so its value is read from the former.
    """
    final = info.get("final_info", {})
    if key not in info and key not in final:
        return None
    return np.where(done, final.get(key, 0.0), info.get(key, 0.0))


class RecordResponseStatistics(gym.vector.VectorWrapper):
    """Adds each response's summed KL, reference log-prob and length to a TextGen vector env's ``final_info``
    (as Gymnasium's ``RecordEpisodeStatistics`` adds returns), and reports the response limit as termination.

    For agents that see the env only through the Gymnasium API (stable-baselines3's PPO on text).

    - ``final_info`` of an ended row gains ``episode_kl`` (sum of the env's per-token ``kl``; mode (a) only),
      ``episode_ref_logprob`` and ``episode_tokens``.
    - ``pop_window()`` returns the sums of ``kl`` / ``ref_logprob`` over every step since the last call.
    - ``response_end_is_terminal`` (default): reaching ``max_new_tokens`` is reported as termination, not
      truncation. The reward model has already scored the text as it stands, so no value lies beyond it
      (lm-human-preferences treats the response as the whole episode); bootstrapping with gamma = 1 from
      a value head that was never trained on final states would feed its own estimate back into its targets.
    """

    def __init__(self, env: gym.vector.VectorEnv, response_end_is_terminal: bool = True):
        super().__init__(env)
        self.response_end_is_terminal = response_end_is_terminal
        n = env.num_envs
        self._ep_kl, self._ep_ref, self._ep_len = np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64)
        self._window = {"kl": 0.0, "ref_logprob": 0.0, "steps": 0}

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._ep_kl[:], self._ep_ref[:], self._ep_len[:] = 0.0, 0.0, 0
        return obs, info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        done = np.asarray(terminated) | np.asarray(truncated)
        final = info.get("final_info", {})
        ref, kl = step_values(info, done, "ref_logprob"), step_values(info, done, "kl")
        has_kl = kl is not None
        kl = kl if has_kl else np.zeros_like(ref)
        self._ep_kl += kl
        self._ep_ref += ref
        self._ep_len += 1
        self._window["kl"] += float(kl.sum())
        self._window["ref_logprob"] += float(ref.sum())
        self._window["steps"] += len(ref)
        if done.any():
            for key, value in (("episode_kl", self._ep_kl), ("episode_ref_logprob", self._ep_ref), ("episode_tokens", self._ep_len)):
                if key == "episode_kl" and not has_kl:
                    continue
                final[key], final[f"_{key}"] = np.where(done, value, 0).astype(value.dtype), done.copy()
            self._ep_kl[done], self._ep_ref[done], self._ep_len[done] = 0.0, 0.0, 0
        if self.response_end_is_terminal:
            terminated, truncated = done, np.zeros_like(done)
        return obs, reward, terminated, truncated, info

    def pop_window(self) -> dict:
        out, self._window = self._window, {"kl": 0.0, "ref_logprob": 0.0, "steps": 0}
        return out
