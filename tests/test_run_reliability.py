"""Runs that are interrupted, share a folder, run out of disk, resume with other settings or meet a failing reward.

The signal tests run the training in a subprocess (``DRIVER``) and signal it as a user's Ctrl-C or a
scheduler's SIGTERM would.
"""

import csv
import errno
import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from text_fixtures import *  # noqa: F401,F403
from text_fixtures import PROMPTS, length_reward

import textenv  # noqa: F401  (registers GridWorld-v0)
from agents import PPO
from agents.checkpoint import load_checkpoint
from agents.rlhf import KLConfig, RLHFConfig, rlhf_ppo_config, train_rlhf
from textenv.text.config import TextGenConfig
from agents.run_guard import FolderBusyError, FolderLock

REPO = Path(__file__).resolve().parents[1]
RLHF_FORMAT = "textenv.agents.rlhf"
# Keys that measure time, not the run: they differ between any two runs.
TIMING = {"steps_per_s", "rollout_s", "update_s", "tokens_per_s", "gold_s", "loop_s"}


def config(lm_dir, out_dir, **kw) -> RLHFConfig:
    """A tiny RLHF run (the one of tests/test_rlhf.py) writing to ``out_dir``."""
    env = TextGenConfig(model=str(lm_dir), reward=kw.pop("reward", length_reward), prompts=list(PROMPTS),
                        max_new_tokens=5, max_prompt_tokens=6, kl_coef=0.1, device="cpu")
    anneal = kw.pop("anneal_lr", True)
    defaults = dict(env=env, num_envs=4, kl=KLConfig(target=1.0, horizon=20.0),
                    ppo=rlhf_ppo_config(n_minibatches=2, n_epochs=2, learning_rate=1e-3, anneal_lr=anneal),
                    device="cpu", out_dir=str(out_dir), checkpoint_every=2, seed=3)
    defaults["responses"] = kw.pop("iterations", 4) * defaults["num_envs"]
    return RLHFConfig(**{**defaults, **kw})


def stop_at(n):
    return lambda agent, metrics: False if agent.iteration == n else None


def progress_iterations(out_dir) -> list[int]:
    with open(Path(out_dir) / "progress.csv") as f:
        return [int(float(row["iteration"])) for row in csv.DictReader(f)]


def assert_same_curve(history, reference):
    assert [h["iteration"] for h in history] == [h["iteration"] for h in reference]
    for key in reference[0]:
        if key in TIMING or key == "samples":
            continue
        got, want = [h[key] for h in history], [h[key] for h in reference]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=key)
    assert [h["samples"] for h in history] == [h["samples"] for h in reference]


def python_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}


# ---------------------------------------------------------------------------------------------- 4. signals
DRIVER = """
import sys, time
import torch
torch.set_num_threads(1)  # as tests/conftest.py: the same numbers as the in-process runs
from test_run_reliability import config
from agents.rlhf import train_rlhf
from agents.run_guard import TrainingInterrupted

lm_dir, out_dir, checkpoint_every = sys.argv[1], sys.argv[2], int(sys.argv[3])
slow = lambda agent, metrics: time.sleep(0.3)  # leaves the test time to signal mid-run
try:
    train_rlhf(config(lm_dir, out_dir, iterations=6, checkpoint_every=checkpoint_every, log_every=1), callback=slow)
except TrainingInterrupted as e:
    print(e, flush=True)
    sys.exit(e.exit_code)
print("finished", flush=True)
"""


def interrupt_after_first_iteration(lm_dir, out_dir, checkpoint_every: int, sig: signal.Signals, tmp_path):
    """Start the driver, send ``sig`` once it has logged iteration 1; returns (exit status, stdout)."""
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(lm_dir), str(out_dir), str(checkpoint_every)],
                                stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO, env=python_env())
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("iter"):
                proc.send_signal(sig)
                break
        rest, _ = proc.communicate(timeout=180)
    return proc.returncode, "".join(lines) + rest, (tmp_path / "stderr.txt").read_text()


@pytest.mark.parametrize("sig, checkpoint_every", [(signal.SIGINT, 1), (signal.SIGTERM, 50)],
                         ids=["sigint-checkpoint-every-iteration", "sigterm-long-after-no-checkpoint"])
def test_a_signal_stops_after_the_iteration_saves_and_resume_continues(lm_dir, tmp_path, sig, checkpoint_every):
    out_dir = tmp_path / "run"
    status, stdout, stderr = interrupt_after_first_iteration(lm_dir, out_dir, checkpoint_every, sig, tmp_path)
    assert status == 128 + sig, (stdout, stderr)
    found = re.search(rf"stopped by {sig.name} at iteration (\d+); checkpoint saved to (\S+); resume with resume=True",
                      stdout)
    assert found, stdout
    stopped = int(found[1])
    assert 1 <= stopped < 6 and Path(found[2]) == out_dir / "checkpoint.pt"
    assert f"{sig.name} received" in stderr
    # Nothing done before the signal is lost, even with no checkpoint due for 50 iterations.
    ckpt = load_checkpoint(out_dir / "checkpoint.pt", RLHF_FORMAT)
    assert ckpt["iteration"] == stopped == progress_iterations(out_dir)[-1]
    assert not list(out_dir.glob(".*.tmp"))

    resumed = train_rlhf(config(lm_dir, out_dir, iterations=6, checkpoint_every=checkpoint_every, resume=True))
    full = train_rlhf(config(lm_dir, tmp_path / "full", iterations=6, checkpoint_every=checkpoint_every)).history
    assert progress_iterations(out_dir) == list(range(1, 7))
    if checkpoint_every == 1:  # the stop fell on a checkpoint boundary: the very same curve
        assert_same_curve(resumed.history, full)
    else:  # mid-segment the resume starts fresh episodes: the same curve up to the stop, then a new segment
        assert_same_curve(resumed.history[:stopped], full[:stopped])
        assert [h["iteration"] for h in resumed.history] == list(range(1, 7))


def test_ctrl_c_in_the_example_says_how_to_resume_and_resume_starts_missing_seeds(tmp_path):
    """examples/rlhf_ppo.py on the embedded task, tiny: Ctrl-C, then --resume with a seed never started."""
    out = tmp_path / "out"
    args = [sys.executable, "examples/rlhf_ppo.py", "--responses", "24", "--num-envs", "4", "--max-new-tokens", "4",
            "--eval-prompts", "4", "--log-every", "1", "--checkpoint-every", "50", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
                            env=python_env())
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("iter"):
            proc.send_signal(signal.SIGINT)
            break
    stdout = "".join(lines) + proc.communicate(timeout=180)[0]
    assert proc.returncode == 130, stdout
    found = re.search(r"stopped by SIGINT at iteration (\d+); checkpoint saved to (\S+); resume with: (.*--resume)$",
                      stdout, re.M)
    assert found and Path(found[2]) == out / "seed0" / "checkpoint.pt", stdout
    assert load_checkpoint(found[2], RLHF_FORMAT)["iteration"] == int(found[1])

    again = subprocess.run(args + ["--resume", "--seeds", "0", "1"], capture_output=True, text=True, cwd=REPO,
                           env=python_env(), timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"seed 1: no checkpoint at {out / 'seed1' / 'checkpoint.pt'} yet: starting it fresh" in again.stdout
    assert "seed 0: no checkpoint" not in again.stdout
    assert progress_iterations(out / "seed0") == progress_iterations(out / "seed1") == list(range(1, 7))
    # summary.json reports the budget spent and the scores per seed
    runs = json.loads((out / "summary.json").read_text())["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    for r in runs:
        assert r["responses"] == 24 and r["generated_tokens"] >= 24  # at least one token per response
        assert r["loop_s"] > 0 and r["s_per_response"] == pytest.approx(r["loop_s"] / 24)
        assert all(math.isfinite(r[k]) for k in ("gold", "rm", "kl"))


# ---------------------------------------------------------------------------------------------- 5. the folder
def test_an_out_dir_that_cannot_be_written_is_refused_before_any_work(lm_dir, tmp_path, monkeypatch):
    import agents.rlhf
    import agents.run_guard

    def no_work(*args, **kwargs):
        raise AssertionError("the models were loaded before out_dir was checked")

    monkeypatch.setattr(agents.rlhf, "make_policy", no_work)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(OSError, match=r"out_dir .*a_file/run is not writable \(Not a directory\)"):
        train_rlhf(config(lm_dir, tmp_path / "a_file" / "run"))

    def read_only(*args, **kwargs):  # what a read-only folder answers (root ignores chmod, so fake it)
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(agents.run_guard.tempfile, "mkstemp", read_only)
    with pytest.raises(PermissionError, match=r"out_dir .*ro is not writable \(Permission denied\): expected a folder"):
        train_rlhf(config(lm_dir, tmp_path / "ro"))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions that apply (not root)")
def test_a_read_only_out_dir_is_refused(lm_dir, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match=r"out_dir .*ro is not writable"):
            train_rlhf(config(lm_dir, folder))
    finally:
        folder.chmod(0o700)


def test_a_full_disk_names_the_file_and_keeps_the_last_checkpoint(lm_dir, tmp_path, monkeypatch):
    real_fsync, disk = os.fsync, {"full": False}

    def fsync(fd):
        if disk["full"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    def fill_disk_after_3(agent, metrics):
        if agent.iteration == 3:  # the checkpoint at 2 is written; the one at 4 will not fit
            disk["full"] = True

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError) as err:
        train_rlhf(config(lm_dir, tmp_path / "run"), callback=fill_disk_after_3)
    message = str(err.value)
    assert err.value.errno == errno.ENOSPC
    assert re.search(r"RLHF training stopped at iteration 4: cannot write \S+/run/checkpoint\.pt: No space left on "
                     r"device; the file already at \S+ is untouched \(the last good checkpoint \S+ \(iteration 2\) "
                     r"is kept\)", message), message
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt", RLHF_FORMAT)["iteration"] == 2
    assert progress_iterations(tmp_path / "run") == [1, 2]
    assert not list((tmp_path / "run").glob(".*.tmp"))


# ---------------------------------------------------------------------------------------------- 6. one run per folder
HOLDER = """
import sys, time
from agents.run_guard import FolderLock
lock = FolderLock(sys.argv[1], "out_dir")
print("holding", flush=True)
time.sleep(120)
"""


def test_a_second_live_run_on_one_folder_is_refused_and_a_killed_runs_lock_is_not(lm_dir, tmp_path):
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    (out_dir / "progress.csv").write_text("iteration\n1\n")  # the live run's results
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out_dir)], stdout=subprocess.PIPE, text=True,
                              cwd=REPO, env=python_env())
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(FolderBusyError, match=rf"out_dir {re.escape(str(out_dir))} is in use by another live "
                                                  rf"run \(pid {holder.pid} holds"):
            train_rlhf(config(lm_dir, out_dir))
        agent = PPO(gym.make_vec("GridWorld-v0", num_envs=2, vectorization_mode="vector_entry_point"), seed=0,
                    n_steps=8, log_dir=str(out_dir), progress_bar=False)
        with pytest.raises(FolderBusyError, match=r"log_dir .* is in use by another live run"):
            agent.learn(16)
        assert agent.num_timesteps == 0 and (out_dir / "progress.csv").read_text() == "iteration\n1\n"
    finally:
        holder.send_signal(signal.SIGKILL)  # dies without releasing anything itself
        holder.wait(timeout=30)
    assert train_rlhf(config(lm_dir, out_dir, iterations=1)).agent.iteration == 1  # the OS released the lock


def test_the_lock_is_released_when_a_run_ends_or_fails(lm_dir, tmp_path):
    out_dir = tmp_path / "run"
    train_rlhf(config(lm_dir, out_dir, iterations=1))
    with pytest.raises(ValueError):
        train_rlhf(config(lm_dir, out_dir, iterations=1, reward=lambda p, c: [float("nan")] * len(c)))
    FolderLock(out_dir).release()  # free again


# ---------------------------------------------------------------------------------------------- 7. progress.csv
def assert_progress_matches_checkpoint(out_dir: Path) -> None:
    if (out_dir / "checkpoint.pt").exists():
        ckpt = load_checkpoint(out_dir / "checkpoint.pt", RLHF_FORMAT)
        assert progress_iterations(out_dir) == [h["iteration"] for h in ckpt["history"]]
    else:
        assert not (out_dir / "progress.csv").exists()


def test_progress_csv_never_holds_an_iteration_the_checkpoint_does_not(lm_dir, tmp_path):
    import torch

    out_dir = tmp_path / "run"

    def poison_at_3(agent, metrics):
        assert_progress_matches_checkpoint(out_dir)  # at every iteration, between checkpoints too
        if agent.iteration == 3:
            with torch.no_grad():
                agent.policy.value_head.bias.fill_(float("nan"))

    with pytest.raises(FloatingPointError, match="stopped at iteration 4"):
        train_rlhf(config(lm_dir, out_dir, iterations=6), callback=poison_at_3)
    assert_progress_matches_checkpoint(out_dir)
    assert progress_iterations(out_dir) == [1, 2]


def test_resume_drops_progress_rows_past_the_checkpoint(lm_dir, tmp_path):
    out_dir = tmp_path / "run"
    train_rlhf(config(lm_dir, out_dir), callback=stop_at(2))
    columns = (out_dir / "progress.csv").read_text().splitlines()[0].count(",") + 1
    with open(out_dir / "progress.csv", "a") as f:  # a killed run (or an older version) wrote iteration 3
        f.write(",".join(["3"] * columns) + "\r\n")
    seen = []
    train_rlhf(config(lm_dir, out_dir, resume=True), callback=lambda a, m: seen.append(progress_iterations(out_dir)))
    assert seen[0] == [1, 2]  # during iteration 3 (no checkpoint yet), the file holds what the checkpoint holds
    assert progress_iterations(out_dir) == [1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------- 8. resume settings
def test_resume_with_other_settings_is_refused_with_what_differs(lm_dir, tmp_path):
    out_dir = tmp_path / "run"
    train_rlhf(config(lm_dir, out_dir), callback=stop_at(2))
    with pytest.raises(ValueError, match=r"settings differ from the checkpoint's: responses \(checkpoint 16, now 24\) "
                                         r"\(with ppo.anneal_lr the learning rate decays"):
        train_rlhf(config(lm_dir, out_dir, iterations=6, resume=True))
    other = config(lm_dir, out_dir, resume=True, kl=KLConfig(target=2.0, horizon=20.0))
    other.ppo.learning_rate = 5e-4
    with pytest.raises(ValueError, match=r"kl\.target \(checkpoint 1\.0, now 2\.0\); ppo\.learning_rate \(checkpoint "
                                         r"0\.001, now 0\.0005\)\. Resume with the checkpoint's settings"):
        train_rlhf(other)
    # Bookkeeping that does not change the numbers may differ.
    resumed = train_rlhf(config(lm_dir, out_dir, resume=True, log_every=1, n_samples=1))
    assert resumed.agent.iteration == 4


def test_a_constant_rate_run_may_be_extended(lm_dir, tmp_path):
    out_dir = tmp_path / "run"
    train_rlhf(config(lm_dir, out_dir, iterations=2, anneal_lr=False))
    longer = train_rlhf(config(lm_dir, out_dir, iterations=4, anneal_lr=False, resume=True))
    assert [h["iteration"] for h in longer.history] == [1, 2, 3, 4]
    assert {h["learning_rate"] for h in longer.history} == {1e-3}


# ---------------------------------------------------------------------------------------------- 9. failing rewards
class RewardServerDown(Exception):
    """What a user's remote reward model raises when its server goes away."""


def test_a_raising_reward_function_is_reported_with_its_iteration(lm_dir, tmp_path):
    state = {"down": False}

    def remote_reward(prompts, completions):
        if state["down"]:
            raise RewardServerDown("connection refused")
        return length_reward(prompts, completions)

    def server_goes_down_after_2(agent, metrics):
        if agent.iteration == 2:
            state["down"] = True

    with pytest.raises(RuntimeError) as err:
        train_rlhf(config(lm_dir, tmp_path / "run", reward=remote_reward), callback=server_goes_down_after_2)
    message = str(err.value)
    assert re.search(r"RLHF training stopped at iteration 3: the reward function .*RewardServerDown"
                     r".*connection refused.*\(the last good checkpoint \S+ \(iteration 2\) is kept\)",
                     message), message
    assert isinstance(err.value.__cause__.__cause__, (RewardServerDown, RuntimeError))
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt", RLHF_FORMAT)["iteration"] == 2


class BreaksAfter(gym.Wrapper):
    def __init__(self, env, steps: int):
        super().__init__(env)
        self.steps = steps

    def step(self, action):
        self.steps -= 1
        if self.steps < 0:
            raise RewardServerDown("connection refused")
        return self.env.step(action)


def test_ppo_learn_names_the_iteration_of_a_failing_env():
    agent = PPO(BreaksAfter(gym.make("GridWorld-v0"), steps=40), seed=0, n_steps=32, progress_bar=False)
    with pytest.raises(RuntimeError, match=r"PPO rollout failed at iteration 2: RewardServerDown: connection refused"):
        agent.learn(128)
    assert agent.iteration == 1


def test_ppo_learn_checks_log_dir_before_the_first_rollout(tmp_path):
    (tmp_path / "a_file").write_text("")
    agent = PPO(gym.make("GridWorld-v0"), seed=0, n_steps=8, log_dir=str(tmp_path / "a_file" / "logs"),
                progress_bar=False)
    with pytest.raises(OSError, match=r"log_dir .*a_file/logs is not writable \(Not a directory\)"):
        agent.learn(16)
    assert agent.num_timesteps == 0


def test_ppo_learn_with_a_log_dir_saves_on_ctrl_c_and_the_checkpoint_continues(tmp_path):
    from agents.run_guard import TrainingInterrupted

    def make_envs():
        return gym.make_vec("GridWorld-v0", num_envs=4, vectorization_mode="vector_entry_point")

    def ctrl_c_at_iteration_2(agent, metrics):
        if agent.iteration == 2:
            os.kill(os.getpid(), signal.SIGINT)  # as a user's Ctrl-C: handled, the iteration is already done

    agent = PPO(make_envs(), seed=0, n_steps=8, log_dir=str(tmp_path), progress_bar=False)
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN under nohup, Python's default otherwise
    with pytest.raises(TrainingInterrupted, match=r"SIGINT at iteration 2; checkpoint saved to .*checkpoint\.pt"):
        agent.learn(10 * 8 * 4, callback=ctrl_c_at_iteration_2)
    assert signal.getsignal(signal.SIGINT) == handler_before  # the caller's handler is back
    resumed = PPO.load(tmp_path / "checkpoint.pt", env=make_envs())
    assert resumed.iteration == 2 and resumed.num_timesteps == agent.num_timesteps
    for a, b in zip(agent.policy.parameters(), resumed.policy.parameters()):
        assert torch.equal(a.cpu(), b.cpu())


def test_kill_9_loses_at_most_the_iteration_in_progress(lm_dir, tmp_path):
    out_dir = tmp_path / "run"
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(lm_dir), str(out_dir), "1"],
                                stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO, env=python_env())
        logged = 0
        for line in proc.stdout:
            if line.startswith("iter"):
                logged += 1
                if logged == 3:
                    proc.kill()  # SIGKILL: no handler runs, nothing is flushed
                    break
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    saved = load_checkpoint(out_dir / "checkpoint.pt", RLHF_FORMAT)["iteration"]
    assert saved >= logged - 1  # the third iteration may have been killed between its log line and its save
    assert progress_iterations(out_dir) == list(range(1, saved + 1))
    resumed = train_rlhf(config(lm_dir, out_dir, iterations=6, checkpoint_every=1, resume=True))
    assert [h["iteration"] for h in resumed.history] == list(range(1, 7))
