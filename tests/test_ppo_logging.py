"""agents.PPO writes one row of metrics per iteration to progress.csv and to TensorBoard."""

import csv

import gymnasium as gym

import textenv  # noqa: F401  (registers GridWorld-v0)
from agents import PPO

EXPECTED = {
    "episode_return", "episode_length", "policy_loss", "value_loss", "entropy", "approx_kl",
    "clip_fraction", "explained_variance", "steps_per_s", "timesteps", "iteration",
}


def test_metrics_reach_csv_and_tensorboard(tmp_path):
    env = gym.make_vec("GridWorld-v0", num_envs=8, vectorization_mode="vector_entry_point")
    seen = []
    agent = PPO(env, seed=0, n_steps=32, log_dir=str(tmp_path), progress_bar=False)
    agent.learn(3 * 8 * 32, callback=lambda a, m: seen.append(m))
    with open(tmp_path / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 == len(seen)
    assert EXPECTED <= set(rows[0])
    assert [int(float(r["iteration"])) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["timesteps"]) == agent.num_timesteps == 3 * 8 * 32
    assert list(tmp_path.glob("events.out.tfevents.*")), "no TensorBoard event file was written"


def test_a_metric_that_appears_late_gets_its_column(tmp_path):
    from agents.logger import Logger

    log = Logger(tmp_path, total=2, progress_bar=False, tensorboard=False)
    log.log({"used_fraction": 0.0}, step=1)
    log.log({"used_fraction": 1.0, "policy_loss": 0.5}, step=2)
    log.close()
    with open(tmp_path / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"used_fraction": "0.0", "policy_loss": ""}, {"used_fraction": "1.0", "policy_loss": "0.5"}]
