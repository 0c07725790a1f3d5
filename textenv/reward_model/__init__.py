"""Reward models: a transformer trunk and a one-output linear head, trained on preference pairs.

Any ``AutoModelForSequenceClassification`` base (GPT-2, Llama, Qwen, ...) serves. Text is scored one way
everywhere (training, evaluation, normalisation and the env): ``score_texts``. One module per idea:

- ``scoring``: how a (prompt, completion) is read (joined verbatim, cut to its last tokens, right-padded) and
  ``score_texts``, the one scoring function.
- ``loss``: ``pairwise_loss``, ``-log sigmoid(r_chosen - r_rejected - margin)``.
- ``model``: ``init_reward_model`` (a classifier on a causal LM's trunk), ``save_reward_model`` / ``load_reward_model``.
- ``training``: ``RewardTrainConfig``, ``train_reward_model`` and ``build_reward_model`` (the recipe of the shipped one).
- ``evaluation``: held-out pairwise accuracy and agreement with a gold judge.
- ``normalize``: ``reward_mean`` / ``reward_std`` over the SFT model's own samples (``normalize_reward_model``).
- ``cli``: ``python -m textenv.reward_model normalize --reward RM --model SFT --prompts P``.
- ``__main__``: runs ``cli.main`` (a module of its own, so ``-m`` does not import the CLI twice).

Every public name is importable from here: ``from textenv.reward_model import score_texts``.
"""

from textenv.reward_model.cli import main
from textenv.reward_model.evaluation import evaluate_reward_model, gold_agreement, pairwise_accuracy
from textenv.reward_model.loss import pairwise_loss
from textenv.reward_model.model import init_reward_model, load_reward_model, save_reward_model
from textenv.reward_model.normalize import (normalize_reward_model, normalize_scores, sample_completions,
                                            set_normalization)
from textenv.reward_model.scoring import (MAX_SANE_TOKENIZER_LENGTH, encode, max_reward_tokens, reward_inputs,
                                          reward_logits, reward_pad_id, reward_text, score_texts)
from textenv.reward_model.training import RewardTrainConfig, build_reward_model, train_reward_model

__all__ = [
    "MAX_SANE_TOKENIZER_LENGTH", "RewardTrainConfig", "build_reward_model", "encode", "evaluate_reward_model",
    "gold_agreement", "init_reward_model", "load_reward_model", "main", "max_reward_tokens", "normalize_reward_model",
    "normalize_scores", "pairwise_accuracy", "pairwise_loss", "reward_inputs", "reward_logits", "reward_pad_id",
    "reward_text", "sample_completions", "save_reward_model", "score_texts", "set_normalization", "train_reward_model",
]
