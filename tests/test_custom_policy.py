"""examples/custom_policy.py: a user's ActorCritic trains with agents.PPO to the grid's optimum and round-trips."""

import importlib.util
from pathlib import Path

import pytest
import torch

from agents import PPO
from textenv.gridworld import policy_return, value_iteration

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_policy.py"


@pytest.fixture(scope="module")
def custom_policy():
    spec = importlib.util.spec_from_file_location("custom_policy", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_custom_policy_reaches_the_optimal_greedy_return(custom_policy, tmp_path):
    agent, score = custom_policy.train(steps=20_000, seed=0)
    assert isinstance(agent.policy, custom_policy.CellEmbeddingActorCritic)
    assert score == policy_return(value_iteration().policy) == 100.0

    # The checkpoint of a custom policy loads into an instance the user passes, and acts the same.
    path = agent.save(tmp_path / "custom.pt")
    with pytest.raises(ValueError, match="custom policy .*CellEmbeddingActorCritic.*pass policy="):
        PPO.load(path)
    loaded = PPO.load(path, policy=custom_policy.make_policy(agent.env), device="cpu")
    assert custom_policy.greedy_return(loaded) == score
    obs = torch.arange(25)
    assert torch.equal(agent.policy(obs)[0], loaded.policy(obs)[0])


def test_custom_policy_shapes(custom_policy):
    policy = custom_policy.CellEmbeddingActorCritic(n_cells=25, n_actions=4)
    logits, values = policy(torch.tensor([0, 7, 24]))
    assert logits.shape == (3, 4) and values.shape == (3,)
    # The policy starts near-uniform, so the first rollouts explore.
    assert torch.allclose(logits.softmax(-1), torch.full((3, 4), 0.25), atol=0.02)
