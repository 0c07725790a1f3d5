"""Training on several processes (agents.distributed): 2 ranks on CPU with gloo, spawned from the test.

What a user relies on: the same global batch split over 2 ranks updates the policy as one process on the
whole batch would; every rank holds the same policy and the same KL coefficient; ranks sample different
responses; rank 0 alone writes; a resumed 2-rank run continues the curve; a checkpoint resumes at another
world size.
"""

from __future__ import annotations

import csv

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from agents import distributed as D
from agents.ppo import PPOConfig
from agents.ppo_update import ppo_update

WORLD = 2


def _spawn(worker, tmp_path, *args) -> list:
    """Run ``worker(rank, tmp_path, *args)`` on 2 gloo ranks; returns each rank's result (rank order)."""
    mp.spawn(_entry, args=(worker, str(tmp_path), args), nprocs=WORLD, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _entry(rank: int, worker, tmp: str, args) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=WORLD)
    try:
        torch.save(worker(rank, tmp, *args), f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


# --------------------------------------------------------------------------- one update, split over ranks
def _toy_problem(seed: int = 0):
    """A batch of 8 responses of unequal lengths (so the ranks hold different numbers of tokens), a tiny
    policy, and the scorer ppo_update calls."""
    g = torch.Generator().manual_seed(seed)
    B, T, d, A = 8, 5, 6, 4
    obs = torch.randn(B, T, d, generator=g)
    actions = torch.randint(0, A, (B, T), generator=g)
    lengths = torch.tensor([5, 1, 3, 2, 5, 4, 1, 2])
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    batch = {"logprobs": -torch.rand(B, T, generator=g) - 1.0, "values": torch.randn(B, T, generator=g),
             "advantages": torch.randn(B, T, generator=g) * 3 + 1, "returns": torch.randn(B, T, generator=g),
             "mask": mask}
    torch.manual_seed(seed)
    policy = torch.nn.ModuleDict({"pi": torch.nn.Linear(d, A), "v": torch.nn.Linear(d, 1)})

    def score(rows):
        logits = policy["pi"](obs[rows])
        dist_ = torch.distributions.Categorical(logits=logits)
        return dist_.log_prob(actions[rows]), dist_.entropy(), policy["v"](obs[rows]).squeeze(-1)

    return policy, batch, score, obs, actions


def _cfg(**kw) -> PPOConfig:
    return PPOConfig(**{"n_epochs": 3, "clip_coef": 0.2, "vf_coef": 0.5, "ent_coef": 0.01, "max_grad_norm": 0.5,
                        "norm_adv": True, "learning_rate": 0.05, **kw})


# Global minibatch k = rows GLOBAL_MB[k]; rank r holds rows 4r..4r+3 and takes its share of each.
GLOBAL_MB = [[0, 1, 4, 5], [2, 3, 6, 7]]


CONFIGS = {"whiten-minibatch": {"norm_adv_over": "minibatch"}, "whiten-batch": {"norm_adv_over": "batch"},
           "early-stop": {"norm_adv_over": "minibatch", "target_kl": 1e-4}}


def _update_worker(rank: int, tmp: str):
    out = {}
    for name, cfg_kw in CONFIGS.items():
        policy, batch, score_all, obs, actions = _toy_problem()
        rows = torch.arange(4 * rank, 4 * rank + 4)
        local = {k: v[rows] for k, v in batch.items()}
        local_mb = [torch.tensor([i - 4 * rank for i in mb if 4 * rank <= i < 4 * rank + 4]) for mb in GLOBAL_MB]
        opt = torch.optim.Adam(policy.parameters(), lr=0.05)
        metrics = ppo_update(policy, opt, _cfg(**cfg_kw), local, lambda: iter(local_mb),
                             lambda mb: score_all(rows[mb]), "test")
        out[name] = {"params": [p.detach().clone() for p in policy.parameters()], "metrics": metrics}
    return out


def test_update_split_over_two_ranks_equals_one_process_on_the_whole_batch(tmp_path):
    ranks = _spawn(_update_worker, tmp_path)  # one spawn for the three settings: a spawn costs seconds
    for name, cfg_kw in CONFIGS.items():
        policy, batch, score, _, _ = _toy_problem()
        opt = torch.optim.Adam(policy.parameters(), lr=0.05)
        minibatches = [torch.tensor(mb) for mb in GLOBAL_MB]
        expected = ppo_update(policy, opt, _cfg(**cfg_kw), batch, lambda: iter(minibatches), score, "test")
        for r in ranks:
            got = r[name]
            for p_got, p_want in zip(got["params"], policy.parameters()):
                torch.testing.assert_close(p_got, p_want.detach(), rtol=1e-5, atol=1e-6, msg=name)
            assert got["metrics"]["epochs"] == expected["epochs"], name
            for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"):
                assert got["metrics"][k] == pytest.approx(expected[k], rel=1e-4, abs=1e-6), (name, k)
        if "target_kl" in cfg_kw:
            assert expected["epochs"] == 1  # the early stop fired, on both ranks at the same step
        else:
            assert expected["epochs"] == 3


def test_without_a_process_group_the_collectives_are_the_identity():
    x, mask = torch.tensor([1.0, 2.0, 6.0]), torch.tensor([1.0, 1.0, 0.0])
    assert D.world() == D.World(0, 1, 0) and D.world().is_main
    torch.testing.assert_close(D.masked_whiten(x, mask), torch.tensor([-1.0, 1.0, 0.0]), atol=1e-4, rtol=0)
    weight, total, _ = D.count_and_whiten(mask)
    assert float(weight) == 1.0 and float(total) == 2.0
    assert D.all_max(3.5) == 3.5 and D.any_rank(False) is False
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.tensor([1.0, 2.0])
    assert D.average_gradients([p], {"a": 2.0}, 2.0, 2.0) == {"a": 2.0} and p.grad.tolist() == [1.0, 2.0]


# --------------------------------------------------------------------------- RLHF on 2 ranks
def _tiny_rlhf(out_dir, **kw):
    from agents.rlhf import RLHFConfig
    from textenv.text.config import TextGenConfig

    return RLHFConfig(env=TextGenConfig(max_new_tokens=6), num_envs=4, responses=24, seed=5, n_samples=4,
                      out_dir=str(out_dir), **kw)


def _curve(history) -> list:
    return [[h["kl_coef"], h["kl"], h["rm_score"], h["policy_loss"], h["responses"]] for h in history]


def _rlhf_worker(rank: int, tmp: str):
    from agents.rlhf import train_rlhf

    full = train_rlhf(_tiny_rlhf(f"{tmp}/full"))
    stop_at_1 = lambda agent, metrics: agent.iteration < 1  # noqa: E731
    train_rlhf(_tiny_rlhf(f"{tmp}/resumed"), callback=stop_at_1)
    resumed = train_rlhf(_tiny_rlhf(f"{tmp}/resumed", resume=True))
    train_rlhf(_tiny_rlhf(f"{tmp}/other_world"), callback=stop_at_1)  # resumed by 1 process below
    return {"curve": _curve(full.history), "resumed_curve": _curve(resumed.history),
            "texts": [s["completion"] for h in full.history for s in h["samples"]],
            "params": torch.cat([p.detach().reshape(-1) for p in full.agent.policy.parameters()]),
            "resumed_params": torch.cat([p.detach().reshape(-1) for p in resumed.agent.policy.parameters()]),
            "responses": full.agent.responses, "iteration": full.agent.iteration}


def test_rlhf_on_two_ranks_trains_one_policy_and_resumes(tmp_path):
    from agents.rlhf import train_rlhf

    r0, r1 = _spawn(_rlhf_worker, tmp_path)
    # One policy, one beta: identical on both ranks after every iteration.
    torch.testing.assert_close(r0["params"], r1["params"], rtol=0, atol=0)
    assert r0["curve"] == r1["curve"]
    betas = [row[0] for row in r0["curve"]]
    assert len(set(betas)) == 3  # the controller moved beta each iteration, the same way on both ranks
    # The budget counts both ranks: 24 responses = 3 iterations of 2 x 4.
    assert r0["responses"] == 24 and r0["iteration"] == 3 and [row[4] for row in r0["curve"]] == [8, 16, 24]
    # Each rank its own prompts and samples.
    assert r0["texts"] != r1["texts"]
    # Rank 0 alone wrote progress.csv (one row per iteration) and the checkpoint.
    with open(tmp_path / "full" / "progress.csv") as f:
        assert len(list(csv.DictReader(f))) == 3
    assert (tmp_path / "full" / "checkpoint.pt").exists()
    # Stopped after iteration 1 and resumed: the same curve and weights as the uninterrupted run.
    assert r0["resumed_curve"] == r0["curve"]
    torch.testing.assert_close(r0["resumed_params"], r0["params"], rtol=0, atol=0)

    # Another world size: 1 process resumes the 2-rank checkpoint (8 responses done) and runs the
    # remaining 16 responses as 4 iterations of 4 (the rule in train_rlhf's docstring).
    result = train_rlhf(_tiny_rlhf(tmp_path / "other_world", resume=True))
    assert [h["responses"] for h in result.history] == [8, 12, 16, 20, 24]
    assert result.history[0]["kl_coef"] == r0["curve"][0][0]


# --------------------------------------------------------------------------- the gridworld PPO on 2 ranks
def _gridworld_worker(rank: int, tmp: str):
    import gymnasium as gym

    import textenv  # noqa: F401  (registers GridWorld-v0)
    from agents.ppo import PPO

    agent = PPO(gym.make_vec("GridWorld-v0", num_envs=2), seed=1, n_steps=16, n_minibatches=2, n_epochs=2,
                device="cpu", progress_bar=False)
    seen = []
    agent.learn(256, callback=lambda a, m: seen.append(a.last_rollout.actions.clone()) or True)
    path = agent.save(f"{tmp}/gridworld.pt")
    return {"params": torch.cat([p.detach().reshape(-1) for p in agent.policy.parameters()]),
            "timesteps": agent.num_timesteps, "actions": torch.stack(seen), "saved": path.exists()}


def test_gridworld_ppo_on_two_ranks_keeps_one_policy(tmp_path):
    r0, r1 = _spawn(_gridworld_worker, tmp_path)
    torch.testing.assert_close(r0["params"], r1["params"], rtol=0, atol=0)
    assert r0["timesteps"] == r1["timesteps"] == 256  # 4 iterations x 16 steps x 2 envs x 2 ranks
    assert not torch.equal(r0["actions"], r1["actions"])  # each rank samples its own episodes
    assert r0["saved"]


def test_the_main_job_under_torchrun_reports_the_whole_job(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(root / "examples" / "rlhf_ppo.py"), "--responses", "16", "--num-envs", "4", "--max-new-tokens", "4",
           "--eval-prompts", "8", "--log-every", "0", "--out", str(tmp_path / "job")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "job" / "summary.json").read_text())
    assert summary["world_size"] == 2
    (run,) = summary["runs"]
    assert run["responses"] == 16 and run["world_size"] == 2 and run["loop_s"] > 0  # both ranks' responses
    assert out.stdout.count("SFT model on 8 held-out prompts") == 1  # rank 0 alone reports
