"""agents.checkpoint under damage: killed saves, flipped bytes, non-finite weights, old files, any MLP's shape."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import textenv  # noqa: F401  (registers GridWorld-v0)
from agents import PPO
from agents.checkpoint import atomic_save, load_checkpoint
from agents.policies import MLPActorCritic
from agents.ppo import CHECKPOINT_FORMAT

REPO = Path(__file__).resolve().parents[1]
STATES = torch.arange(25)  # every cell of the default grid


def grid_envs(n: int = 4):
    return gym.make_vec("GridWorld-v0", num_envs=n, vectorization_mode="vector_entry_point")


def small_agent(policy=None) -> PPO:
    agent = PPO(grid_envs(), policy=policy, seed=0, device="cpu", n_steps=16, progress_bar=False)
    agent.learn(64)  # an optimizer state too, not just fresh weights
    return agent


def same(a, b) -> bool:
    """Deep equality of checkpoint contents (dicts, lists, tensors, plain values)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


# ---------------------------------------------------------------------------------------------- killed saves
WRITER = """
import sys, time
from agents.checkpoint import atomic_write

def write(f):
    f.write(b"x" * 1_000_000)
    f.flush()
    print("writing", flush=True)
    time.sleep(120)

atomic_write(sys.argv[1], write)
"""


def start_writer(target: Path) -> subprocess.Popen:
    """A process stuck half-way through saving ``target`` (its temporary file exists and is locked)."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "writing"
    return proc


def temporaries(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.*.tmp"))


def test_next_save_removes_a_killed_saves_temporary_but_not_a_live_writers(tmp_path):
    agent = small_agent()
    path = agent.save(tmp_path / "agent.pt")
    good = path.read_bytes()
    live = start_writer(path)  # another writer, still at work
    try:
        [live_tmp] = temporaries(path)
        killed = start_writer(path)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        [killed_tmp] = set(temporaries(path)) - {live_tmp}  # kill -9 ran no cleanup: a full-size leftover
        assert killed_tmp.stat().st_size == 1_000_000 and path.read_bytes() == good
        time.sleep(0.05)  # the next save's own temporary file is newer than both

        agent.save(path)
        assert temporaries(path) == [live_tmp]  # the dead writer's file is gone, the live one's kept
        PPO.load(path)
    finally:
        live.kill()
        live.wait(timeout=30)
    agent.save(path)  # now that writer is dead too: its leftover goes as well
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.pt"]


# ---------------------------------------------------------------------------------------------- damaged files
def test_a_flipped_byte_is_refused_or_harmless(tmp_path):
    path = small_agent().save(tmp_path / "agent.pt")
    data = path.read_bytes()
    original = load_checkpoint(path, CHECKPOINT_FORMAT)
    rng = np.random.default_rng(0)
    positions = sorted(set(rng.integers(0, len(data), 300).tolist()) | {len(data) // 2})
    refused = 0
    for pos in positions:
        damaged = bytearray(data)
        damaged[pos] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            loaded = load_checkpoint(path, CHECKPOINT_FORMAT)
        except ValueError as e:
            assert str(path) in str(e)
            refused += 1
        else:  # a byte the format does not read (zip padding, a timestamp): the contents must be unchanged
            assert same(loaded, original), f"byte {pos} changed the contents without being noticed"
    assert refused > len(positions) // 2


def test_a_flipped_payload_byte_names_the_file_and_the_checksum(tmp_path):
    path = small_agent().save(tmp_path / "agent.pt")
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01  # the middle of the file is the weights' bytes
    path.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=r"agent\.pt is damaged: the SHA-256 of its contents does not match"):
        PPO.load(path)


def test_non_finite_weights_are_refused_at_save_and_keep_the_previous_file(tmp_path):
    agent = small_agent()
    path = agent.save(tmp_path / "agent.pt")
    good = path.read_bytes()
    with torch.no_grad():
        agent.policy.critic[2].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"refusing to save .*agent\.pt: tensor policy/critic\.2\.weight holds NaN"):
        agent.save(path)
    assert path.read_bytes() == good and os.listdir(tmp_path) == ["agent.pt"]


def test_non_finite_weights_are_refused_at_load(tmp_path, monkeypatch):
    import agents.checkpoint

    bad = {"format": CHECKPOINT_FORMAT, "policy": {"actor.0.weight": torch.tensor([1.0, float("inf")])}}
    with monkeypatch.context() as m:  # a writer without the save-time check ...
        m.setattr(agents.checkpoint, "first_non_finite", lambda obj, key="": None)
        sealed = atomic_save(bad, tmp_path / "sealed.pt")
    unsealed = tmp_path / "old.pt"
    torch.save(bad, unsealed)  # ... and an old unsealed file
    for path in (sealed, unsealed):
        with pytest.raises(ValueError, match=rf"{path.name} is damaged: tensor policy/actor\.0\.weight holds NaN"):
            PPO.load(path)


def test_an_unsealed_version_1_checkpoint_still_loads(tmp_path):
    """Files written before the seal (and before policy_kwargs) load, hidden sizes read off the weights."""
    agent = small_agent(MLPActorCritic(gym.spaces.Discrete(25), gym.spaces.Discrete(4), hidden_sizes=(32,)))
    old = {
        "format": CHECKPOINT_FORMAT, "version": 1, "config": __import__("dataclasses").asdict(agent.config),
        "policy_class": "MLPActorCritic",
        "observation_space": {"type": "Discrete", "n": 25, "start": 0},
        "action_space": {"type": "Discrete", "n": 4, "start": 0},
        "policy": agent.policy.state_dict(), "optimizer": agent.optimizer.state_dict(),
        "num_timesteps": agent.num_timesteps, "iteration": agent.iteration,
    }
    torch.save(old, tmp_path / "v1.pt")
    loaded = PPO.load(tmp_path / "v1.pt", device="cpu")
    assert torch.equal(loaded.policy(STATES)[0], agent.policy(STATES)[0])
    assert loaded.num_timesteps == agent.num_timesteps


# ---------------------------------------------------------------------------------------------- the default policy
@pytest.mark.parametrize("hidden_sizes", [(128,), (16, 8, 4)], ids=["one-wide-layer", "three-layers"])
def test_load_rebuilds_any_mlp_it_wrote(tmp_path, hidden_sizes):
    space = gym.spaces.Discrete(25), gym.spaces.Discrete(4)
    agent = small_agent(MLPActorCritic(*space, hidden_sizes=hidden_sizes))
    loaded = PPO.load(agent.save(tmp_path / "agent.pt"), env=grid_envs(), device="cpu")  # no policy= needed
    assert [m.out_features for m in loaded.policy.actor if isinstance(m, nn.Linear)][:-1] == list(hidden_sizes)
    for a, b in zip(agent.policy(STATES), loaded.policy(STATES)):
        assert torch.equal(a, b)
    loaded.learn(64)  # and it trains on


def test_an_mlp_changed_after_construction_needs_policy(tmp_path):
    space = gym.spaces.Discrete(25), gym.spaces.Discrete(4)

    def relu_mlp():  # MLPActorCritic builds tanh layers; this user swapped them for ReLU
        policy = MLPActorCritic(*space, hidden_sizes=(32,))
        policy.actor[1] = policy.critic[1] = nn.ReLU()
        return policy

    agent = small_agent(relu_mlp())
    path = agent.save(tmp_path / "agent.pt")
    with pytest.raises(ValueError, match=r"changed after it was built(.|\n)*ReLU(.|\n)*pass policy="):
        PPO.load(path)
    loaded = PPO.load(path, policy=relu_mlp(), device="cpu")
    assert torch.equal(loaded.policy(STATES)[0], agent.policy(STATES)[0])
