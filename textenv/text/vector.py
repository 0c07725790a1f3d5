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

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from rlcore.checks import check_options, check_row_seeds, short
from textenv.text.config import TextGenConfig, make_config
from textenv.text.core import StepParts, TextGenCore
from textenv.text.env import TextGenEnv, observation_space, rollback_rngs
from textenv.text.loading import fork_safe_threads
from textenv.text.render import render_rgb


class TextGenVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` TextGen episodes in one batch. Takes ``TextGenEnv``'s arguments (a ``TextGenConfig`` and / or its
    settings as keywords, ``policy``, ``render_mode``) after ``num_envs``; see its docstring.

    Reset options: ``{"prompt": p}`` (every reset row starts from ``p``) or ``{"prompts": [p_0, ..., p_N-1]}``
    (a list of one per row, not a bare string; the entries of rows that are not reset are not read), and
    Gymnasium's ``{"reset_mask": bool array (N,)}`` to reset only some rows, and ``{"kl_coef": beta}``: the
    KL coefficient of every row from this reset on (how a KL controller hands the env its beta), and
    ``{"group_size": K}``: rows come in groups of K consecutive rows (0..K-1, K..2K-1, ...) that share one
    prompt, drawn by the group's first row (the K responses to one prompt that RLOO and GRPO compare;
    ``num_envs`` and the rows reset must be whole groups). ``seed``: None, an int >= 0
    (row ``i`` gets ``seed + i``) or a list of N entries, each None or an int >= 0. ``num_envs`` is at most
    ``loading.MAX_NUM_ENVS`` (65,536). Like the single env, every call is all or nothing: it raises before
    any row changes.
    """

    OPTIONS = ("prompt", "prompts", "reset_mask", "kl_coef", "group_size")

    metadata = {"render_modes": ["ansi", "human", "rgb_array"], "render_fps": 4, "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1, config: TextGenConfig | None = None, *, policy=None,
                 render_mode: str | None = None, **settings: Any) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.render_mode = render_mode
        fork_safe_threads()
        self.config = make_config(config, **settings)
        self.core = TextGenCore(self.config, num_envs, policy)
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
    start_model = TextGenEnv.start_model
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
        # All or nothing: seeds, options and prompts are checked, and new generators made, before a row changes.
        seeds = check_row_seeds(seed, self.num_envs)
        options = check_options(options, self.OPTIONS)
        rows = self._rows_to_reset(options.get("reset_mask"))
        kl_coef = self.core.kl_coef_option(options)
        encoded = {i: self.core.encode_prompt(p) for i, p in self._given_prompts(options, rows).items()}
        group = self._group_size(options, rows)
        fresh = {i: seeding.np_random(seeds[i]) for i in rows if seeds[i] is not None or self._rngs[i] is None}
        draw = [i for i in rows if i not in encoded and i % group == 0]
        rngs = {i: fresh[i][0] if i in fresh else self._rngs[i] for i in draw}
        with rollback_rngs([rngs[i] for i in draw if i not in fresh]):
            for i in draw:
                encoded[i] = self.core.encode_prompt(self.core.sample_prompt(rngs[i]))
        for i in rows:  # the other rows of a group take its first row's prompt
            encoded.setdefault(i, encoded[i - i % group])
        for i, (rng, row_seed) in fresh.items():
            self._rngs[i], self._seeds[i] = rng, row_seed
        if kl_coef is not None:
            self.core.kl_coef = kl_coef
        texts = self.core.start_rows(rows, [encoded[i] for i in rows])
        info = self._masked({"prompt": self._per_row(rows, texts)}, rows)
        if self.render_mode == "human":
            self.render()
        return self.core.observe(), info

    def step(self, actions):
        # Everything is computed and checked (the step, then the prompts of the rows that restart) before committing.
        parts, after = self.core.prepare_step(actions)
        done = after.done
        rows = np.flatnonzero(done)
        live = np.flatnonzero(~done)
        restart = self._draw_prompts(rows)
        self.core.commit(after)
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
            texts = self.core.start_rows(rows, restart)
            info = self._masked({"prompt": self._per_row(rows, texts)}, rows, into=info)
        if self.render_mode == "human":
            self.render()
        return self.core.observe(), parts.reward, parts.terminated, parts.truncated, info

    def render(self) -> tuple[str, ...] | tuple[np.ndarray, ...] | None:
        if self.render_mode is None:
            gym.logger.warn('render() called without a render_mode; use render_mode="ansi", "human" or "rgb_array"')
            return None
        if self.render_mode == "rgb_array":  # one frame per row, as SyncVectorEnv returns its envs' frames
            return tuple(render_rgb(self.core, i) for i in range(self.num_envs))
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

    def _rows_to_reset(self, reset_mask) -> np.ndarray:
        n = self.num_envs
        if reset_mask is None:
            return np.arange(n)
        try:
            mask = np.asarray(reset_mask)
        except (TypeError, ValueError):  # ragged
            mask = None
        if mask is None or mask.shape != (n,) or mask.dtype != np.bool_ or not mask.any():
            raise ValueError(
                f"options['reset_mask'] must be a bool array of shape ({n},) with at least one True, got {short(reset_mask)}"
            )
        return np.flatnonzero(mask)

    def _group_size(self, options: dict, rows: np.ndarray) -> int:
        """``options["group_size"]`` checked against the env and the rows reset; 1 without the option."""
        k = options.get("group_size")
        if k is None:
            return 1
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 or self.num_envs % k:
            raise ValueError(f"options['group_size'] must be an int >= 1 that divides num_envs={self.num_envs}, "
                             f"got {short(k)}")
        if "prompt" in options or "prompts" in options:
            raise ValueError("options['group_size'] draws one prompt per group: it cannot be combined with "
                             "options['prompt'] or options['prompts'] (repeat each prompt K times in 'prompts')")
        reset = np.zeros(self.num_envs, dtype=bool)
        reset[rows] = True
        if (reset.reshape(-1, k).any(1) != reset.reshape(-1, k).all(1)).any():
            raise ValueError(f"options['reset_mask'] must reset whole groups of group_size={k} rows")
        return int(k)

    def _given_prompts(self, options: dict, rows: np.ndarray) -> dict:
        """``{row: prompt}`` from ``options["prompts"]`` or ``options["prompt"]``; empty when prompts are drawn."""
        n, prompts, prompt = self.num_envs, options.get("prompts"), options.get("prompt")
        if prompts is not None and prompt is not None:
            raise ValueError("options['prompt'] (one prompt for every reset row) and options['prompts'] (one per row) "
                             "were both given; pass one of them")
        if prompts is None:
            return {} if prompt is None else {int(i): prompt for i in rows}
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, (Sequence, np.ndarray)):
            raise TypeError(f"options['prompts'] must be a list of {n} prompts (one per row, each a str or a list of "
                            f"token ids), got {type(prompts).__name__} {short(prompts)}")
        if len(prompts) != n:
            raise ValueError(f"options['prompts'] needs {n} prompts (one per row), got {len(prompts)}")
        return {int(i): prompts[i] for i in rows}

    def _draw_prompts(self, rows: np.ndarray) -> list:
        """Encoded prompts for the rows that restart, drawn in row order; the draws are undone if one fails."""
        rngs = [self._rng(i) for i in rows]
        with rollback_rngs(rngs):
            return [self.core.encode_prompt(self.core.sample_prompt(rng)) for rng in rngs]

    def _step_info(self, parts: StepParts, rows: np.ndarray, final: bool) -> dict:
        """Vector info of the step parts for ``rows`` (per-step keys; the ending keys too when ``final``)."""
        if not len(rows):
            return {}
        values = {"ref_logprob": parts.ref_logprob}
        if parts.kl is not None:
            values["kl"], values["policy_logprob"] = parts.kl, parts.policy_logprob
        if final:
            values["rm_score"] = parts.rm_score
            values["completion"], values["prompt"] = parts.completion, parts.prompt
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
