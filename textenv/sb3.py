"""Present a same-step-autoreset Gymnasium ``VectorEnv`` as a Stable-Baselines3 ``VecEnv``.

Our native vector envs (``TextGenVectorEnv``, ``GridWorldVectorEnv``) batch the work themselves; SB3 would
otherwise wrap N single envs in a ``DummyVecEnv`` and lose that. The two APIs differ only in bookkeeping:

=====================================  ==============================================================
Gymnasium (SAME_STEP)                   SB3 VecEnv
=====================================  ==============================================================
``terminated``, ``truncated``           ``dones = terminated | truncated``
``info["final_obs"][i]``                ``infos[i]["terminal_observation"]``
``info["final_info"]`` (masked dict)    ``infos[i]`` of the finished row, plus ``"TimeLimit.truncated"``
reset info of the next episode          ``reset_infos[i]``
``reset(seed=s)`` seeds row i: s + i    ``seed(s)`` then ``reset()``
=====================================  ==============================================================

Usage::

    from stable_baselines3 import PPO
    from textenv.sb3 import SB3VecEnvAdapter

    venv = SB3VecEnvAdapter(gym.make_vec("TextGen-v0", num_envs=16, vectorization_mode="vector_entry_point"))
    PPO("MultiInputPolicy", venv, n_steps=32).learn(10_000)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn


def unbatch_info(info: dict, i: int) -> dict:
    """Row ``i`` of a Gymnasium vector info dict (values whose ``_key`` mask is set; nested dicts recursed)."""
    out = {}
    for key, value in info.items():
        if key.startswith("_"):
            continue
        mask = info.get(f"_{key}")
        if mask is not None and not mask[i]:
            continue
        if isinstance(value, dict):
            out[key] = unbatch_info(value, i)
        else:
            item = value[i]
            out[key] = item.item() if isinstance(item, np.generic) else item
    return out


class SB3VecEnvAdapter(VecEnv):
    """A Gymnasium ``VectorEnv`` with ``metadata["autoreset_mode"] == AutoresetMode.SAME_STEP`` as an SB3 ``VecEnv``.

    Args:
        vec_env: the vector env (e.g. ``gym.make_vec("TextGen-v0", num_envs=64, vectorization_mode="vector_entry_point")``).
    """

    def __init__(self, vec_env) -> None:
        mode = vec_env.metadata.get("autoreset_mode")
        if mode not in (AutoresetMode.SAME_STEP, AutoresetMode.SAME_STEP.value):
            raise ValueError(
                f"SB3VecEnvAdapter needs a vector env with same-step autoreset (metadata['autoreset_mode'] = "
                f"AutoresetMode.SAME_STEP), got {mode!r}"
            )
        self.vec_env = vec_env
        self._actions: np.ndarray | None = None
        super().__init__(vec_env.num_envs, vec_env.single_observation_space, vec_env.single_action_space)

    def reset(self) -> VecEnvObs:
        seed = self._seeds[0]  # VecEnv.seed(s) stores [s, s+1, ...]; the vector env derives s+i itself
        options = self._options[0] if self._options and self._options[0] else None
        obs, info = self.vec_env.reset(seed=seed, options=options)
        self.reset_infos = [unbatch_info(info, i) for i in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, terminated, truncated, info = self.vec_env.step(self._actions)
        dones = np.logical_or(terminated, truncated)
        final_obs, final_info = info.get("final_obs"), info.get("final_info", {})
        infos = []
        for i in range(self.num_envs):
            if dones[i]:
                row = unbatch_info(final_info, i)
                row["terminal_observation"] = final_obs[i]
                self.reset_infos[i] = unbatch_info({k: v for k, v in info.items() if not k.startswith(("final_", "_final_"))}, i)
            else:
                row = unbatch_info(info, i)
            row["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            infos.append(row)
        return obs, np.asarray(rewards, dtype=np.float32), dones, infos

    def close(self) -> None:
        self.vec_env.close()

    # -- attribute plumbing: one vector env, so every index sees the same object ---------------------------

    def _target(self):
        return getattr(self.vec_env, "unwrapped", self.vec_env)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self._target(), attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        if len(list(self._get_indices(indices))) != self.num_envs:
            raise ValueError("set_attr on a natively batched env applies to all rows at once; pass indices=None")
        setattr(self._target(), attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        result = getattr(self._target(), method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]
