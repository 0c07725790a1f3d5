"""Stable-Baselines3's PPO on TextGen-v0: an SB3 ``ActorCriticPolicy`` around a pretrained causal LM.

    from stable_baselines3 import PPO as SB3PPO
    venv = SB3VecEnvAdapter(RecordResponseStatistics(TextGenVectorEnv(num_envs=32, kl_coef=beta)))   # mode (b): no policy=
    model = SB3PPO(SB3LMPolicy, venv, ent_coef=beta, gamma=1.0, n_steps=16,
                   policy_kwargs=dict(lm=sft_path(), sampling=venv.get_attr("sampling")[0]))
    model.learn(20_000, callback=SB3RLHFCallback())

The policy: features are the LM trunk's last-layer hidden state at the last position, actions come from
the LM's own head (under the env's ``SamplingConfig``), and a zero-initialised linear value head reads the
same features. Every call is one plain forward over the whole (B, L) window: no KV cache while acting and
no episode grouping in the update, because SB3 asks for one row at a time (shuffled steps). This is the
baseline ``agents.PPO`` + ``agents.lm`` is measured against (benchmarks/bench_rlhf_iteration.py).

The KL penalty in the entropy form (TextGen-v0's mode (b)). The per-token RLHF reward is
``-beta * (log pi(a_t|s_t) - log pi_ref(a_t|s_t))``. Without a policy the env pays
``+beta * log pi_ref(a_t|s_t)``; the missing ``-beta * log pi(a_t|s_t)`` has expectation
``beta * H(pi(.|s_t))`` over the sampled token, and SB3's loss adds ``ent_coef * H(pi(.|s_t))``: so
``ent_coef = beta`` is its counterpart. They agree on the step's own term (in expectation, with the same
gradient: d/dtheta E[-log pi] = E[-log pi * d log pi] = dH/dtheta); they differ in that the reward form
also flows through the returns (earlier tokens are credited with the entropy of later ones, through the
advantages, their whitening and the value targets), while SB3's bonus acts only at each state. The
``agents.PPO`` side subtracts the ``-beta log pi`` from the reward itself (``PPOConfig.logprob_reward_coef``)
when it runs in mode (b), and the env computes the whole KL in mode (a).
"""

from __future__ import annotations

import time

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import Tensor, nn

from textenv.text.loading import load_causal_lm
from textenv.text.sampling import SamplingConfig


class SB3LMPolicy(ActorCriticPolicy):
    """An SB3 actor-critic whose actor is a causal LM and whose critic is a linear head on its trunk.

    Args:
        observation_space: TextGen-v0's Dict(input_ids, attention_mask) space.
        action_space: Discrete(V).
        lr_schedule: SB3's learning-rate schedule.
        lm: the causal LM: a name or path (loaded with ``AutoModelForCausalLM``) or a module (trained in place).
        sampling: the env's ``SamplingConfig`` (``venv.get_attr("sampling")[0]``).
        **kwargs: passed on to ``ActorCriticPolicy`` (``ortho_init`` is always False: the LM keeps its weights).
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule, lm=None,
                 sampling: SamplingConfig | None = None, **kwargs):
        if lm is None:
            raise ValueError("SB3LMPolicy needs policy_kwargs=dict(lm=<causal LM name, path or module>)")
        # nn.Module forbids assigning a module before its __init__; _build (called by it) loads the LM.
        self._lm_spec = (lm,)
        self.sampling = sampling or SamplingConfig()
        kwargs["ortho_init"] = False  # the pretrained LM keeps its weights; the value head starts at zero
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule) -> None:
        spec = self._lm_spec[0]
        self.lm = load_causal_lm(spec, "cpu").eval()  # SB3 moves the whole policy to its device afterwards
        if not isinstance(self.action_dist, CategoricalDistribution):
            raise TypeError(f"SB3LMPolicy needs a Discrete action space, got {self.action_space}")
        hidden = self.lm.get_output_embeddings().weight.shape[1]
        self.value_net = nn.Linear(hidden, 1)
        nn.init.zeros_(self.value_net.weight)
        nn.init.zeros_(self.value_net.bias)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def set_training_mode(self, mode: bool) -> None:
        super().set_training_mode(mode)
        self.lm.eval()  # no dropout in rollouts or updates: both score the same function

    def _logits_and_values(self, obs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Sampling-distribution logits (B, V) and values (B, 1) at the last position: one full forward."""
        ids = obs["input_ids"].long()  # the rollout buffer stores observations as float32
        mask = obs["attention_mask"].long()
        pos = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, L) left padding does not shift positions
        out = self.lm(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True,
                      logits_to_keep=1, use_cache=False)
        features = out.hidden_states[-1][:, -1]  # (B, H) the trunk at the last position
        return self.sampling.sampling_logits(out.logits[:, -1]), self.value_net(features)

    def forward(self, obs, deterministic: bool = False):
        logits, values = self._logits_and_values(obs)
        dist = self.action_dist.proba_distribution(action_logits=logits)
        actions = dist.get_actions(deterministic=deterministic)
        return actions, values, dist.log_prob(actions)

    def evaluate_actions(self, obs, actions: Tensor):
        logits, values = self._logits_and_values(obs)
        dist = self.action_dist.proba_distribution(action_logits=logits)
        return values, dist.log_prob(actions), dist.entropy()

    def get_distribution(self, obs):
        return self.action_dist.proba_distribution(action_logits=self._logits_and_values(obs)[0])

    def predict_values(self, obs) -> Tensor:
        return self._logits_and_values(obs)[1]


class SB3RLHFCallback(BaseCallback):
    """Per-rollout RLHF metrics for SB3's PPO in mode (b): RM score, KL per episode (exact k1), tokens/s.

    Accumulates ``log pi(a_t|s_t) - log pi_ref(a_t|s_t)`` per row from SB3's ``log_probs`` and the env's
    ``ref_logprob`` info, and appends one dict per rollout to ``history``.
    """

    def __init__(self, gold_fn=None, n_samples: int = 3):
        super().__init__()
        self.gold_fn, self.n_samples = gold_fn, n_samples
        self.history: list[dict] = []

    def _on_training_start(self) -> None:
        n = self.training_env.num_envs
        self._kl = np.zeros(n)
        self._episodes: list[dict] = []
        self._start = time.perf_counter()
        self._tokens = 0

    def _on_step(self) -> bool:
        infos, dones = self.locals["infos"], self.locals["dones"]
        logp = self.locals["log_probs"].detach().cpu().numpy()
        ref = np.array([info["ref_logprob"] for info in infos])
        self._kl += logp - ref
        self._tokens += len(infos)
        for i in np.flatnonzero(dones):
            info = infos[i]
            self._episodes.append({"prompt": info["prompt"], "completion": info["completion"], "rm_score": info["rm_score"],
                                   "kl": self._kl[i], "tokens": info.get("episode_tokens", np.nan)})
            self._kl[i] = 0.0
        return True

    def _on_rollout_end(self) -> None:
        eps, nan = self._episodes, float("nan")
        gold = nan
        if self.gold_fn is not None and eps:
            gold = float(np.mean(self.gold_fn([e["prompt"] for e in eps], [e["completion"] for e in eps])))
        elapsed = time.perf_counter() - self._start
        self.history.append({
            "timesteps": self.num_timesteps,
            "rm_score": float(np.mean([e["rm_score"] for e in eps])) if eps else nan,
            "gold_score": gold,
            "kl": float(np.mean([e["kl"] for e in eps])) if eps else nan,
            "response_length": float(np.mean([e["tokens"] for e in eps])) if eps else nan,
            "episodes": len(eps),
            "wall_s": elapsed,
            "samples": [{"prompt": e["prompt"], "completion": e["completion"], "rm_score": float(e["rm_score"])}
                        for e in eps[: self.n_samples]],
        })
        self._episodes = []
