"""TextGenVectorEnv: N text-generation episodes stepped together (the natively batched twin of TextGenEnv).

One copy of each model. Per step: one batched reference forward (KV-cached, see ``IncrementalLM``), one
policy forward when a policy is given (shared with the agent through the memo), and one reward-model call
over the episodes that ended in that step.

Autoreset follows Gymnasium's ``AutoresetMode.SAME_STEP`` exactly as ``SyncVectorEnv`` lays it out: a row
that ends returns the first observation of its next episode; the last observation is in
``info["final_obs"]`` (object array of per-row dicts, mask ``info["_final_obs"]``) and the last step's info
in ``info["final_info"]`` (a vector info dict with its own masks). The top-level info of such a row holds
the new episode's reset info. ``reset(seed=s)`` seeds row ``i`` like a single env seeded ``s + i``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from textenv.text.core import StepParts, TextGenCore
from textenv.text.env import TextGenEnv, observation_space


class TextGenVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` TextGen episodes in one batch. Takes ``TextGenEnv``'s arguments; see its docstring.

    Reset options: ``{"prompt": p}`` (every reset row starts from ``p``), ``{"prompts": [p_0, ..., p_N-1]}``
    (one per row), and Gymnasium's ``{"reset_mask": bool array (N,)}`` to reset only some rows.
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 4, "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1, render_mode: str | None = None, **kwargs: Any) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.core = TextGenCore(num_envs, **kwargs)
        self.num_envs = self.core.num_envs
        self.single_action_space = gym.spaces.Discrete(self.core.vocab_size)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.single_observation_space = observation_space(self.core.vocab_size, self.core.seq_len)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._rngs: list[np.random.Generator | None] = [None] * self.num_envs
        self._seeds: list[int | None] = [None] * self.num_envs

    # -- what an agent reads from the env (same names as TextGenEnv) -------------------------------------

    kl_coef = TextGenEnv.kl_coef
    sampling = TextGenEnv.sampling
    model = TextGenEnv.model
    ref_model = TextGenEnv.ref_model
    tokenizer = TextGenEnv.tokenizer
    reward_fn = TextGenEnv.reward_fn
    eos_token_id = TextGenEnv.eos_token_id
    pad_token_id = TextGenEnv.pad_token_id

    @property
    def np_random(self) -> tuple[np.random.Generator, ...]:
        """The per-row generators (prompt sampling is the env's only randomness)."""
        return tuple(self._rng(i) for i in range(self.num_envs))

    @property
    def np_random_seed(self) -> tuple[int | None, ...]:
        return tuple(self._seeds)

    # -- Gymnasium vector API ---------------------------------------------------------------------------

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        n = self.num_envs
        seeds = [None] * n if seed is None else [seed + i for i in range(n)] if isinstance(seed, int) else list(seed)
        if len(seeds) != n:
            raise ValueError(f"reset(seed=[...]) needs {n} seeds (one per row), got {len(seeds)}")
        options = dict(options or {})
        reset_mask = options.pop("reset_mask", None)
        if reset_mask is None:
            rows = np.arange(n)
        else:
            reset_mask = np.asarray(reset_mask)
            if reset_mask.shape != (n,) or reset_mask.dtype != np.bool_ or not reset_mask.any():
                raise ValueError(f"options['reset_mask'] must be a bool array of shape ({n},) with at least one True")
            rows = np.flatnonzero(reset_mask)
        if options.get("prompts") is not None and len(options["prompts"]) != n:
            raise ValueError(f"options['prompts'] needs {n} prompts (one per row), got {len(options['prompts'])}")
        for i in rows:
            if seeds[i] is not None or self._rngs[i] is None:
                self._rngs[i], self._seeds[i] = seeding.np_random(seeds[i])

        prompts = [self._prompt_for(i, options) for i in rows]
        info = self._masked({"prompt": self._per_row(rows, self.core.reset_rows(rows, prompts))}, rows)
        if self.render_mode == "human":
            self.render()
        return self.core.observe(), info

    def step(self, actions):
        parts = self.core.step(actions)
        done = parts.terminated | parts.truncated
        rows = np.flatnonzero(done)
        live = np.flatnonzero(~done)
        info = {}
        if len(rows):
            final_obs = np.full(self.num_envs, None, dtype=object)
            last = self.core.observe(rows)
            for j, i in enumerate(rows):
                final_obs[i] = {k: v[j] for k, v in last.items()}
            info["final_obs"], info["_final_obs"] = final_obs, done.copy()
            info["final_info"], info["_final_info"] = self._step_info(parts, rows, final=True), done.copy()
        info.update(self._step_info(parts, live, final=False))
        if len(rows):
            texts = self.core.reset_rows(rows, [self.core.sample_prompt(self._rng(i)) for i in rows])
            info = self._masked({"prompt": self._per_row(rows, texts)}, rows, into=info)
        if self.render_mode == "human":
            self.render()
        return self.core.observe(), parts.reward, parts.terminated, parts.truncated, info

    def render(self) -> tuple[str, ...] | None:
        if self.render_mode is None:
            gym.logger.warn('render() called without a render_mode; use render_mode="ansi" or "human"')
            return None
        texts = tuple(self.core.render_row(i) for i in range(self.num_envs))
        if self.render_mode == "ansi":
            return texts
        print("\n".join(f"[{i}] {t}" for i, t in enumerate(texts)))
        return None

    # -- helpers ----------------------------------------------------------------------------------------

    def _rng(self, i: int) -> np.random.Generator:
        if self._rngs[i] is None:
            self._rngs[i], self._seeds[i] = seeding.np_random(None)
        return self._rngs[i]

    def _per_row(self, rows, values) -> list:
        out = [None] * self.num_envs
        for i, v in zip(rows, values):
            out[i] = v
        return out

    def _prompt_for(self, i: int, options: dict):
        if options.get("prompts") is not None:
            return options["prompts"][i]
        if options.get("prompt") is not None:
            return options["prompt"]
        return self.core.sample_prompt(self._rng(i))

    def _step_info(self, parts: StepParts, rows: np.ndarray, final: bool) -> dict:
        """Vector info of the step parts for ``rows`` (per-step keys; the ending keys too when ``final``)."""
        if not len(rows):
            return {}
        values = {"ref_logprob": parts.ref_logprob}
        if parts.kl is not None:
            values["kl"], values["policy_logprob"] = parts.kl, parts.policy_logprob
        if final:
            values["rm_score"] = parts.rm_score
            values["text"], values["prompt"] = parts.text, parts.prompt
        return self._masked(values, rows)

    def _masked(self, values: dict, rows, into: dict | None = None) -> dict:
        """``{key: (N,) array, "_key": mask}`` from length-N ``values``, kept only in ``rows`` (zeros / None
        elsewhere), the layout ``SyncVectorEnv`` builds from single-env infos."""
        out = {} if into is None else into
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[np.asarray(rows, dtype=np.int64)] = True
        for key, value in values.items():
            if isinstance(value, np.ndarray) and value.dtype != object:
                array = np.where(mask, value, 0).astype(value.dtype)
            else:  # strings: an object array, like SyncVectorEnv makes for non-numeric values
                array = np.full(self.num_envs, None, dtype=object)
                for i in np.flatnonzero(mask):
                    array[i] = value[i]
            out[key], out[f"_{key}"] = array, mask.copy()
        return out
