"""agents.rlhf: KL controllers, the RLHF loop's metrics, checkpoints and resume, and the plug-in points."""

import math

import numpy as np
import pytest
import torch
from text_fixtures import *  # noqa: F401,F403
from text_fixtures import PROMPTS, length_reward, make_lm
from torch import nn

from agents.policies import ActorCritic
from agents.rlhf import (
    AdaptiveKLController,
    FixedKLController,
    KLConfig,
    RLHFConfig,
    evaluate_policy,
    rlhf_ppo_config,
    train_rlhf,
)
from textenv.text.config import TextGenConfig
from textenv.text.vector import TextGenVectorEnv
from textenv.text.wrappers import RecordResponseStatistics


# ---------------------------------------------------------------------------------------------- controllers
def test_fixed_controller_never_moves():
    c = FixedKLController(0.05)
    assert c.update(100.0, 64) == 0.05 and c.value == 0.05


def test_adaptive_controller_hand_worked():
    c = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    # KL 9 is 50% over target: the error is clipped to +0.2; beta *= 1 + 0.2 * 256 / 10000
    assert c.update(9.0, 256) == pytest.approx(0.1 * 1.00512, rel=1e-12)
    c = AdaptiveKLController(0.1, target=6.0, horizon=1000)
    # KL 6.6: error 0.1 -> beta *= 1 + 0.1 * 100 / 1000
    assert c.update(6.6, 100) == pytest.approx(0.101, rel=1e-12)
    # then KL 3: error clipped to -0.2 -> beta *= 1 - 0.2 * 500 / 1000
    assert c.update(3.0, 500) == pytest.approx(0.101 * 0.9, rel=1e-12)
    assert c.update(float("nan"), 64) == pytest.approx(0.0909, rel=1e-12)  # no episodes: no change
    d = AdaptiveKLController(1.0, 1.0, 1.0)
    d.load_state_dict(c.state_dict())
    assert d.state_dict() == c.state_dict()


# ---------------------------------------------------------------------------------------------- helpers
def config(lm_dir, tmp_path, **kw) -> RLHFConfig:
    env_kw = dict(model=str(lm_dir), reward=length_reward, prompts=list(PROMPTS), max_new_tokens=5,
                  max_prompt_tokens=6, kl_coef=0.1, device="cpu")
    env_kw.update(kw.pop("env", {}))
    defaults = dict(env=TextGenConfig(**env_kw), num_envs=kw.pop("num_envs", 4), kl=KLConfig(target=1.0, horizon=20.0),
                    ppo=rlhf_ppo_config(n_minibatches=2, n_epochs=2, learning_rate=1e-3),
                    device="cpu", out_dir=str(tmp_path / "run"), checkpoint_every=2, seed=3)
    defaults["responses"] = kw.pop("iterations", 4) * defaults["num_envs"]
    defaults.update(kw)
    return RLHFConfig(**defaults)


def curve(history, key):
    return [h[key] for h in history]


# ---------------------------------------------------------------------------------------------- the loop
def test_train_rlhf_reports_rlhf_metrics(lm_dir, tmp_path):
    result = train_rlhf(config(lm_dir, tmp_path))
    h = result.history
    assert len(h) == 4 and result.agent.iteration == 4
    for key in ("rm_score", "kl", "kl_per_token", "kl_coef", "tokens_per_s", "response_length", "policy_loss"):
        assert all(math.isfinite(x) for x in curve(h, key)), key
    assert all(math.isnan(x) for x in curve(h, "gold_score"))  # a custom task has no judge unless given one
    # the user's reward function is what the agent is paid: rm_score is the completions' word count
    sample = h[-1]["samples"][0]
    assert sample["rm_score"] == len(sample["completion"].split())
    assert curve(h, "kl_coef")[0] == 0.1 and curve(h, "kl_coef")[-1] != 0.1  # the adaptive controller moved beta
    assert (tmp_path / "run" / "checkpoint.pt").exists() and (tmp_path / "run" / "progress.csv").exists()


def test_gold_function_is_reported(lm_dir, tmp_path):
    gold = lambda prompts, completions: np.array([-len(c) for c in completions], dtype=float)  # noqa: E731
    h = train_rlhf(config(lm_dir, tmp_path, iterations=1, gold=gold)).history
    assert math.isfinite(h[0]["gold_score"]) and h[0]["gold_score"] <= 0


def test_resume_continues_the_same_curve(lm_dir, tmp_path):
    full = train_rlhf(config(lm_dir, tmp_path / "a")).history
    stop_at_2 = lambda agent, metrics: False if agent.iteration == 2 else None  # noqa: E731  (a "killed" run)
    first = train_rlhf(config(lm_dir, tmp_path / "b"), callback=stop_at_2)
    assert first.agent.iteration == 2
    resumed = train_rlhf(config(lm_dir, tmp_path / "b", resume=True))
    assert resumed.agent.iteration == 4
    h = resumed.history
    assert curve(h, "iteration") == [1, 2, 3, 4]
    assert curve(h, "generated_tokens") == curve(full, "generated_tokens")
    for key in ("rm_score", "kl", "kl_coef", "policy_loss", "value_loss", "learning_rate"):
        np.testing.assert_allclose(curve(h, key), curve(full, key), rtol=1e-6, atol=1e-7, err_msg=key)
    assert h[-1]["samples"] == full[-1]["samples"]


def test_resume_from_missing_or_corrupt_checkpoint(lm_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot resume: no checkpoint"):
        train_rlhf(config(lm_dir, tmp_path, resume=True))
    (tmp_path / "run").mkdir(exist_ok=True)
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"half a checkpoint")
    with pytest.raises(ValueError, match="cannot resume.*corrupt"):
        train_rlhf(config(lm_dir, tmp_path, resume=True))


def test_killed_save_keeps_the_previous_checkpoint(lm_dir, tmp_path, monkeypatch):
    import agents.checkpoint

    stop_at_2 = lambda agent, metrics: False if agent.iteration == 2 else None  # noqa: E731
    train_rlhf(config(lm_dir, tmp_path, iterations=4), callback=stop_at_2)  # a resume keeps the run's settings
    path = tmp_path / "run" / "checkpoint.pt"
    good = path.read_bytes()

    def dies_mid_write(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(agents.checkpoint.torch, "save", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        train_rlhf(config(lm_dir, tmp_path, iterations=4, resume=True))
    assert path.read_bytes() == good
    assert [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")] == []


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(lm_dir, tmp_path):
    from agents.checkpoint import load_checkpoint

    def poison(agent, metrics):
        if agent.iteration == 3:
            with torch.no_grad():
                agent.policy.value_head.bias.fill_(float("nan"))

    with pytest.raises(FloatingPointError, match=r"stopped at iteration 4.*last good checkpoint .* is kept"):
        train_rlhf(config(lm_dir, tmp_path, iterations=6), callback=poison)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt", "textenv.agents.rlhf")["iteration"] == 2


def test_nan_reward_stops_training(lm_dir, tmp_path):
    calls = []

    def flaky(prompts, completions):
        calls.append(1)
        return [float("nan") if len(calls) > 3 else 1.0 for _ in completions]

    with pytest.raises(ValueError, match="RLHF training stopped.*must be finite"):
        train_rlhf(config(lm_dir, tmp_path, env={"reward": flaky}))


def test_reward_function_with_the_wrong_shape_is_a_clear_error(lm_dir, tmp_path):
    bad = lambda prompts, completions: np.zeros((len(completions), 2))  # noqa: E731
    with pytest.raises(ValueError, match=r"returned shape \(\d+, 2\); expected \(\d+,\)"):
        train_rlhf(config(lm_dir, tmp_path, env={"reward": bad}))


# ---------------------------------------------------------------------------------------------- plugging in
class BagOfTokensPolicy(ActorCritic):
    """A user's own policy: mean token embedding -> logits and value (no next_token_logits: mode b)."""

    def __init__(self, vocab: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.pi = nn.Linear(16, vocab)
        self.v = nn.Linear(16, 1)

    def forward(self, obs):
        ids, mask = obs["input_ids"], obs["attention_mask"].float()
        h = (self.embed(ids) * mask[..., None]).sum(1) / mask.sum(-1, keepdim=True)  # (B, 16)
        return self.pi(h), self.v(h).squeeze(-1)


def test_user_policy_class_trains_in_entropy_form(lm_dir, tmp_path):
    cfg = config(lm_dir, tmp_path, policy=BagOfTokensPolicy(64), iterations=3)
    result = train_rlhf(cfg)
    h = result.history
    # mode (b): the env pays +beta * log pi_ref, the agent -beta * log pi; the controller moves both betas
    betas = curve(h, "kl_coef")
    assert betas[0] == 0.1 and betas[-1] != 0.1 and result.agent.env.unwrapped.kl_coef == betas[-1]
    assert all(math.isfinite(x) for x in curve(h, "kl")) and all(math.isfinite(x) for x in curve(h, "rm_score"))


def test_response_stats_sums_the_kl_and_ends_at_the_limit(lm_dir):
    ref = make_lm()
    env = RecordResponseStatistics(TextGenVectorEnv(num_envs=3, model=ref, tokenizer=str(lm_dir), reward=length_reward,
                                         prompts=list(PROMPTS), max_new_tokens=4, max_prompt_tokens=6,
                                         policy=make_lm(seed=5), stop_at_eos=False, device="cpu"))
    env.reset(seed=0)
    kl = np.zeros(3)
    for t in range(4):
        _, _, term, trunc, info = env.step(np.array([5, 6, 7]))
        kl += info["final_info"]["kl"] if t == 3 else info["kl"]
    assert term.all() and not trunc.any()  # the response limit is the episode's end: nothing to bootstrap
    np.testing.assert_allclose(info["final_info"]["episode_kl"], kl)
    assert (info["final_info"]["episode_tokens"] == 4).all()


def test_evaluate_sft_against_itself_has_zero_kl(lm_dir):
    task = TextGenConfig(model=str(lm_dir), reward=length_reward, max_new_tokens=5, max_prompt_tokens=6, device="cpu")
    out = evaluate_policy(make_lm(), task, list(PROMPTS), seed=0)  # make_lm() has the weights saved in lm_dir
    assert len(out["completion"]) == len(PROMPTS) and all(isinstance(c, str) for c in out["completion"])
    np.testing.assert_allclose(out["kl"], 0.0, atol=1e-5)
    again = evaluate_policy(make_lm(), task, list(PROMPTS), seed=0)
    assert again["completion"] == out["completion"]  # seeded
