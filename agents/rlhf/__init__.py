"""RLHF with PPO on TextGen-v0.

    from agents.rlhf import RLHFConfig, train_rlhf
    result = train_rlhf(RLHFConfig(responses=3200, out_dir="outputs/rlhf"))  # the embedded default task
    result.history[-1]["gold_score"], result.agent.policy                  # curves, the trained LMActorCritic

The pieces, in the order an iteration uses them:

- ``responses.py``  the rollout: whole responses, one row each, from a TextGen vector env (``collect_responses``)
  and their scoring by the current policy, one forward per response (``score_responses``).
- ``loop.py``       ``train_rlhf``: rollout, rewards, advantages (``agents.functional.response_gae``), PPO's
  update (``agents.ppo_update.ppo_update``, the same one the gridworld trains with), metrics, KL controller, checkpoint.
- ``metrics.py``    what an iteration reports; ``evaluate.py`` the held-out evaluation.
- ``config.py``     ``RLHFConfig`` (its task is a ``textenv.text.config.TextGenConfig``; ``KLConfig``, ``rlhf_ppo_config``) and the settings a resume
  must match; ``checkpoint.py`` the checkpoint.

The reward per token is lm-human-preferences' (Ziegler et al. 2019): ``r_t = -beta * KL_t`` plus the reward
model's score on the last token (lecture slides, "Reward hacking"), paid by the env with the beta the KL
controller hands it at each rollout's reset.

Plugging in your own pieces (each is one field of the config; tests/test_rlhf.py runs every one):

    RLHFConfig(env=TextGenConfig(model="path/or/hub-name"))           # any HF causal LM: policy init + reference
    RLHFConfig(env=TextGenConfig(reward=lambda prompts, completions: scores))   # a Python reward function
    RLHFConfig(policy=MyActorCritic(...))  # your agents.policies.ActorCritic: forward(obs) -> (logits, values)
    RLHFConfig(critic="separate", critic_model=reward_path())          # a critic trunk started from the RM

A policy with ``next_token_logits(input_ids, attention_mask)`` (raw logits) runs in mode (a); one without
it runs in mode (b): the env pays ``+beta * log pi_ref`` and the rollout subtracts ``beta * log pi`` itself.

Resuming and stopping: a checkpoint (out_dir/checkpoint.pt, written atomically every ``checkpoint_every``
iterations, by default each one) holds everything a resume needs, and every iteration draws from seeds of
its own, so ``RLHFConfig(..., resume=True)`` continues the very curve an uninterrupted run draws. A resume
whose settings differ from the checkpoint's is refused with the list of differences. Ctrl-C (SIGINT) or
SIGTERM lets the current iteration finish, writes a checkpoint and raises
``agents.run_guard.TrainingInterrupted``. One live run per out_dir; progress.csv is rewritten after each
checkpoint, so it never holds an iteration the checkpoint does not.
"""

from agents.kl_control import AdaptiveKLController, FixedKLController
from agents.rlhf.checkpoint import CHECKPOINT_FORMAT, load_rlhf_checkpoint, save_rlhf_checkpoint
from agents.rlhf.config import KLConfig, LoRAConfig, RLHFConfig, rlhf_ppo_config, run_settings
from agents.rlhf.evaluate import evaluate_policy
from agents.rlhf.loop import RLHFAgent, RLHFResult, default_gold, make_env, make_policy, train_rlhf
from agents.rlhf.responses import Responses, collect_responses, score_responses

__all__ = [
    "AdaptiveKLController", "CHECKPOINT_FORMAT", "FixedKLController", "KLConfig", "LoRAConfig", "RLHFAgent", "RLHFConfig",
    "RLHFResult", "Responses", "collect_responses", "default_gold", "evaluate_policy",
    "load_rlhf_checkpoint", "make_env", "make_policy", "rlhf_ppo_config", "run_settings", "save_rlhf_checkpoint",
    "score_responses", "train_rlhf",
]
