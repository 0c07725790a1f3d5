"""TextGenEnv: reward parts, modes (a) and (b), loading by path, env checkers, bad inputs."""

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from text_fixtures import *  # noqa: F403  (fixtures: lm_dir, rm_dir, prompts_file, env_kwargs)
from text_fixtures import PROMPTS, length_reward, make_lm, make_tokenizer, save_lm
from textenv.text.env import TextGenEnv
from textenv.text.sampling import SamplingConfig

REPO = Path(__file__).resolve().parents[1]


def run_episode(env, actions=None, seed=0, options=None):
    obs, info = env.reset(seed=seed, options=options)
    steps = []
    t = 0
    while True:
        a = actions[t] if actions is not None else int(env.unwrapped.ids_rng.integers(3, env.action_space.n))
        obs, r, term, trunc, info = env.step(a)
        steps.append((obs, r, term, trunc, info))
        t += 1
        if term or trunc:
            return steps


def random_actions(n, low=3, high=38, seed=0):  # real words: ids 3..37
    return np.random.default_rng(seed).integers(low, high, n).tolist()


# -- spaces, observations, loading ----------------------------------------------------------------------


def test_spaces_and_left_padded_observation(env_kwargs):
    env = TextGenEnv(**env_kwargs)
    assert env.action_space == gym.spaces.Discrete(64)  # the model's logits, not the tokenizer's 40 entries
    assert env.observation_space["input_ids"].shape == (12,)
    obs, info = env.reset(options={"prompt": "the movie was"})
    assert info == {"prompt": "the movie was"}
    tok = env.tokenizer
    assert obs["attention_mask"].tolist() == [0] * 9 + [1] * 3
    assert obs["input_ids"][-3:].tolist() == tok("the movie was")["input_ids"]
    assert obs["input_ids"].dtype == np.int64 and obs in env.observation_space
    good = tok.convert_tokens_to_ids("good")
    obs, *_ = env.step(good)
    assert obs["input_ids"][-1] == good and obs["attention_mask"].tolist() == [0] * 8 + [1] * 4


def test_prompt_sources_by_path(lm_dir, rm_dir, prompts_file, tmp_path):
    import datasets

    txt = tmp_path / "prompts.txt"
    txt.write_text("\n".join(PROMPTS) + "\n")
    ds = datasets.Dataset.from_dict({"prompt": PROMPTS})
    ds.save_to_disk(str(tmp_path / "ds"))
    for source in (prompts_file, str(txt), ds, tmp_path / "ds"):
        env = TextGenEnv(model=Path(lm_dir), reward=str(rm_dir), prompts=source, max_new_tokens=4, max_prompt_tokens=6)
        assert env.core.prompts == PROMPTS
        assert env.reset(seed=1)[1]["prompt"] in PROMPTS
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TextGenEnv(model=str(lm_dir), reward=str(rm_dir), prompts=str(tmp_path / "nope.txt"))


def test_model_passed_as_module_needs_or_finds_its_tokenizer(lm_dir, rm_dir):
    model = AutoModelForCausalLM.from_pretrained(str(lm_dir))
    env = TextGenEnv(model=model, reward=str(rm_dir), prompts=PROMPTS, max_new_tokens=4, max_prompt_tokens=6)
    assert env.start_model is model and len(env.tokenizer) == len(make_tokenizer())  # found through model.name_or_path
    with pytest.raises(ValueError, match="pass tokenizer="):
        TextGenEnv(model=make_lm(), reward=str(rm_dir), prompts=PROMPTS)
    env = TextGenEnv(model=make_lm(), tokenizer=make_tokenizer(), reward=length_reward, prompts=PROMPTS, max_prompt_tokens=6,
                     max_new_tokens=4)
    assert env.reset(seed=0)[0] in env.observation_space


def test_make_in_a_fresh_interpreter(lm_dir, rm_dir):
    code = (
        "import gymnasium as gym\n"
        f"env = gym.make('textenv:TextGen-v0', model={str(lm_dir)!r}, reward={str(rm_dir)!r}, prompts=['the movie'],"
        " max_new_tokens=3, max_prompt_tokens=4)\n"
        "obs, info = env.reset(seed=0)\n"
        "obs, r, te, tr, info = env.step(5)\n"
        "print('ok', obs['input_ids'].shape)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny model: threads only add hand-off latency
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ok (7,)" in out.stdout


# -- rewards ------------------------------------------------------------------------------------------


def test_mode_b_reward_is_kl_coef_times_ref_logprob_plus_score(env_kwargs):
    env = TextGenEnv(**{**env_kwargs, "kl_coef": 0.3, "reward": length_reward, "no_eos_penalty": -2.0})
    steps = run_episode(env, actions=random_actions(6))
    for _, r, term, trunc, info in steps[:-1]:
        assert set(info) == {"ref_logprob"}
        assert r == pytest.approx(0.3 * info["ref_logprob"])
    _, r, term, trunc, info = steps[-1]
    assert trunc and not term and len(steps) == 6
    assert info["rm_score"] == len(info["completion"].split()) == 6
    assert r == pytest.approx(0.3 * info["ref_logprob"] + 6 - 2.0)  # no EOS: the penalty applies
    assert env.core.completion_text(0) == info["completion"]


def test_eos_terminates_without_penalty(env_kwargs):
    env = TextGenEnv(**{**env_kwargs, "reward": length_reward, "no_eos_penalty": -2.0, "kl_coef": 0.0})
    eos = env.eos_token_id
    steps = run_episode(env, actions=[5, 6, eos])
    _, r, term, trunc, info = steps[-1]
    assert term and not trunc and len(steps) == 3
    assert info["rm_score"] == 2 and r == pytest.approx(2.0)  # EOS is not part of the text
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(5)


def test_stop_at_eos_false_keeps_generating(env_kwargs):
    env = TextGenEnv(**{**env_kwargs, "stop_at_eos": False, "reward": length_reward, "no_eos_penalty": -1.0, "kl_coef": 0.0})
    eos = env.eos_token_id
    steps = run_episode(env, actions=[eos, 5, 6, 7, 8, 9])
    assert len(steps) == 6 and steps[-1][3] and steps[-1][1] == pytest.approx(5.0)  # has an EOS: no penalty


def test_mode_a_reward_is_score_minus_kl(lm_dir, env_kwargs):
    policy = make_lm(seed=7)
    env = TextGenEnv(**{**env_kwargs, "policy": policy, "kl_coef": 0.2, "kl_estimator": "k1"})
    steps = run_episode(env, actions=random_actions(6, seed=3))
    total_kl = 0.0
    for _, r, term, trunc, info in steps:
        assert info["kl"] == pytest.approx(info["policy_logprob"] - info["ref_logprob"], abs=1e-5)
        total_kl += info["kl"]
    ret = sum(s[1] for s in steps)
    assert ret == pytest.approx(steps[-1][4]["rm_score"] - 0.2 * total_kl, abs=1e-5)


@pytest.mark.parametrize("estimator", ["k1", "k3", "full"])
def test_policy_equal_to_reference_gives_zero_kl_and_reward_equals_score(lm_dir, rm_dir, estimator):
    model = AutoModelForCausalLM.from_pretrained(str(lm_dir))
    copy = AutoModelForCausalLM.from_pretrained(str(lm_dir))
    for policy in (model, copy):  # the same module (one shared forward) and an identical copy
        env = TextGenEnv(model=model, reward=str(rm_dir), prompts=PROMPTS, policy=policy, max_new_tokens=5,
                         max_prompt_tokens=6, kl_coef=1.0, kl_estimator=estimator)
        steps = run_episode(env, actions=random_actions(5, seed=4))
        for _, r, term, trunc, info in steps:
            assert info["kl"] == pytest.approx(0.0, abs=1e-5)
        assert sum(s[1] for s in steps) == pytest.approx(steps[-1][4]["rm_score"], abs=1e-5)


def test_scored_distribution_is_sampling_config_process(lm_dir, rm_dir):
    """The policy log-prob the env scores is log_softmax(SamplingConfig.sampling_logits(logits)); the reference's is temperature only."""
    policy, ref = make_lm(seed=3), AutoModelForCausalLM.from_pretrained(str(lm_dir))
    env = TextGenEnv(model=ref, reward=str(rm_dir), prompts=PROMPTS, policy=policy, max_new_tokens=5, max_prompt_tokens=6,
                     temperature=0.7, top_k=5, kl_estimator="full")
    assert env.sampling == SamplingConfig(temperature=0.7, top_k=5)
    obs, _ = env.reset(seed=0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        ids, mask = torch.tensor(obs["input_ids"])[None], torch.tensor(obs["attention_mask"])[None]
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            pl = policy(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
            rl = ref(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
        a = int(env.sampling.sample(pl, generator=gen))
        obs, r, term, trunc, info = env.step(a)
        logits = env.sampling.sampling_logits(pl)
        assert torch.isfinite(logits).sum() == 5
        assert info["policy_logprob"] == pytest.approx(torch.log_softmax(logits, -1)[0, a].item(), abs=1e-4)
        assert info["ref_logprob"] == pytest.approx(torch.log_softmax(rl / 0.7, -1)[0, a].item(), abs=1e-4)
        p = torch.softmax(logits, -1)
        full = (p * (torch.log_softmax(logits, -1) - torch.log_softmax(rl / 0.7, -1))).nan_to_num().sum().item()
        assert info["kl"] == pytest.approx(full, abs=1e-4)
        if term or trunc:
            break
    # A token top-k removed cannot have been sampled: its KL is undefined, and the env says so.
    env.reset(seed=0)
    obs = env.core.observe()
    pl = env.core.policy_lm.next_token_logits(obs["input_ids"], obs["attention_mask"])
    outside = int(torch.argmin(pl[0]))
    with pytest.raises(ValueError, match="probability 0 under the policy's sampling distribution"):
        env.step(outside)


def test_policy_object_shares_one_forward_with_the_agent(lm_dir, rm_dir):
    from textenv.text.decoding import IncrementalLM

    shared = IncrementalLM(make_lm(seed=3))
    env = TextGenEnv(model=str(lm_dir), reward=str(rm_dir), prompts=PROMPTS, policy=shared, max_new_tokens=4,
                     max_prompt_tokens=6)
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        logits = shared.next_token_logits(obs["input_ids"][None], obs["attention_mask"][None])  # the agent acts
        forwards = shared.stats["forwards"]
        obs, *_ = env.step(int(env.sampling.sample(logits)[0]))
        assert shared.stats["forwards"] == forwards  # the env reused the agent's forward


def test_kl_coef_can_change_between_steps(env_kwargs):
    env = gym.make("textenv:TextGen-v0", **{**env_kwargs, "reward": length_reward, "kl_coef": 0.05})
    env.reset(seed=0)
    _, r1, *_, info1 = env.step(5)
    env.unwrapped.kl_coef = 0.0
    _, r2, *_ = env.step(6)
    assert r1 == pytest.approx(0.05 * info1["ref_logprob"]) and r2 == 0.0
    with pytest.raises(ValueError, match="kl_coef must be a finite number >= 0"):
        env.unwrapped.kl_coef = -1


def test_reward_model_normalisation_from_config(lm_dir, tmp_path):
    from text_fixtures import save_rm

    raw, norm = save_rm(tmp_path / "raw"), save_rm(tmp_path / "norm", reward_mean=1.0, reward_std=4.0)
    scores = []
    for rm in (raw, norm):
        env = TextGenEnv(model=str(lm_dir), reward=str(rm), prompts=PROMPTS, max_new_tokens=3, max_prompt_tokens=6)
        scores.append(run_episode(env, actions=[5, 6, 7])[-1][4]["rm_score"])
    assert scores[1] == pytest.approx((scores[0] - 1.0) / 4.0, rel=1e-5)


def test_render_ansi_and_human(env_kwargs, capsys):
    env = TextGenEnv(**env_kwargs, render_mode="ansi")
    env.reset(options={"prompt": "the movie was"})
    env.step(env.tokenizer.convert_tokens_to_ids("good"))
    assert env.render() == "the movie was[ good]"
    env = TextGenEnv(**env_kwargs, render_mode="human")
    env.reset(options={"prompt": "the movie was"})
    assert "the movie was[]" in capsys.readouterr().out
    with pytest.raises(ValueError, match="render_mode"):
        TextGenEnv(**env_kwargs, render_mode="rgb_array_list")  # (rgb_array is one: tests/test_text_vectorization.py)


# -- env checkers ---------------------------------------------------------------------------------------


def test_gymnasium_and_sb3_checkers_pass(env_kwargs):
    import warnings

    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any other checker warning fails the test
        warnings.filterwarnings("ignore", message=".*is different from the unwrapped version")  # gym.make's wrappers
        warnings.filterwarnings("ignore", message=".*not having a spec")  # the raw env cannot be re-made by id
        for env in (TextGenEnv(**env_kwargs), gym.make("textenv:TextGen-v0", **env_kwargs, render_mode="ansi")):
            gym_check(env)  # includes the render modes (ansi and human) through the spec
            sb3_check(env, warn=True)


# -- bad inputs -----------------------------------------------------------------------------------------


def test_action_out_of_vocabulary(env_kwargs):
    env = TextGenEnv(**env_kwargs)
    env.reset(seed=0)
    for bad in (64, -1):
        with pytest.raises(ValueError, match=r"action .* is not a token id: the action space is Discrete\(64\)"):
            env.step(bad)


def test_step_before_reset(env_kwargs):
    with pytest.raises(RuntimeError, match="call reset"):
        TextGenEnv(**env_kwargs).step(5)


def test_long_prompt_is_truncated_from_the_left_with_a_warning(env_kwargs):
    env = TextGenEnv(**env_kwargs)  # max_prompt_tokens=6
    long = "i loved this film and the acting was very good"
    ids = env.tokenizer(long)["input_ids"]
    with pytest.warns(UserWarning, match="longer than max_prompt_tokens=6; keeping its last 6 tokens"):
        obs, info = env.reset(options={"prompt": long})
    assert obs["input_ids"][-6:].tolist() == ids[-6:] and obs["attention_mask"].sum() == 6
    assert info["prompt"] == "the acting was very good" or info["prompt"].endswith("very good")


def test_empty_prompt_is_an_error(env_kwargs):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        TextGenEnv(**{**env_kwargs, "prompts": ["the movie", "  "]})
    env = TextGenEnv(**env_kwargs)
    with pytest.raises(ValueError, match="empty prompt"):
        env.reset(options={"prompt": ""})
    with pytest.raises(ValueError, match="has no tokens"):
        env.reset(options={"prompt": []})


def test_prompt_token_ids_are_checked(env_kwargs):
    env = TextGenEnv(**env_kwargs)
    obs, info = env.reset(options={"prompt": [5, 6]})
    assert obs["input_ids"][-2:].tolist() == [5, 6]
    with pytest.raises(ValueError, match=r"prompt token id 99 is outside the vocabulary \[0, 64\)"):
        env.reset(options={"prompt": [5, 99]})


def test_tokenizer_without_pad_or_eos(lm_dir, tmp_path):
    kw = dict(reward=length_reward, prompts=PROMPTS, max_new_tokens=3, max_prompt_tokens=6)
    no_pad = save_lm(tmp_path / "nopad", tokenizer=make_tokenizer(pad=False))
    env = TextGenEnv(model=str(no_pad), **kw)
    obs, _ = env.reset(options={"prompt": "the movie"})
    assert env.pad_token_id == env.eos_token_id == 1 and obs["input_ids"][0] == 1  # pad falls back to eos
    no_eos = save_lm(tmp_path / "noeos", tokenizer=make_tokenizer(pad=False, eos=False))
    env = TextGenEnv(model=str(no_eos), **kw)
    assert env.eos_token_id == 1  # from the model config
    no_eos_anywhere = save_lm(tmp_path / "none", tokenizer=make_tokenizer(pad=False, eos=False), eos_token_id=None,
                              bos_token_id=None, pad_token_id=None)
    with pytest.raises(ValueError, match="no EOS token: the tokenizer has no eos_token and the model config has no eos_token_id"):
        TextGenEnv(model=str(no_eos_anywhere), **kw)
    env = TextGenEnv(model=str(no_eos_anywhere), stop_at_eos=False, **kw)
    assert len(run_episode(env, actions=[1, 1, 1])) == 3


def test_tokenizer_vocabulary_must_fit_the_model(tmp_path):
    tok = make_tokenizer(extra_words=40)
    path = save_lm(tmp_path / "big", tokenizer=tok)
    with pytest.raises(ValueError, match=f"the tokenizer has {len(tok)} tokens but the model only produces 64 logits"):
        TextGenEnv(model=str(path), reward=length_reward, prompts=PROMPTS)


def test_context_must_fit_the_model_positions(lm_dir):
    with pytest.raises(ValueError, match="= 70 exceeds the model's context of 64 positions"):
        TextGenEnv(model=str(lm_dir), reward=length_reward, prompts=PROMPTS, max_prompt_tokens=20, max_new_tokens=50)


def test_reward_returning_nan_names_the_sample(env_kwargs):
    env = TextGenEnv(**{**env_kwargs, "reward": lambda p, c: [float("nan")] * len(c)})
    env.reset(options={"prompt": "the movie"})
    with pytest.raises(ValueError, match=r"sample 0 \(prompt='the movie', completion=' good'\)"):
        for _ in range(6):
            env.step(env.tokenizer.convert_tokens_to_ids("good") if _ == 0 else env.eos_token_id)


def test_bad_arguments(env_kwargs):
    with pytest.raises(ValueError, match="unknown kl_estimator 'kl'"):
        TextGenEnv(**{**env_kwargs, "kl_estimator": "kl"})
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 1"):
        TextGenEnv(**{**env_kwargs, "max_new_tokens": 0})
    with pytest.raises(ValueError, match="top_p"):
        TextGenEnv(**{**env_kwargs, "top_p": 2.0})


def test_truncation_keeps_a_leading_bos(tmp_path):
    from tokenizers import processors

    tok = make_tokenizer()
    bos = tok.convert_tokens_to_ids("<eos>")  # any special will do as BOS here
    tok._tokenizer.post_processor = processors.TemplateProcessing(single="<eos> $A", special_tokens=[("<eos>", bos)])
    tok.bos_token = "<eos>"
    path = save_lm(tmp_path / "bos", tokenizer=tok)
    env = TextGenEnv(model=str(path), reward=length_reward, prompts=PROMPTS, max_prompt_tokens=4, max_new_tokens=3)
    ids = env.tokenizer("i loved this film and the acting")["input_ids"]
    assert ids[0] == bos
    with pytest.warns(UserWarning, match="keeping its last 3 tokens after the BOS token"):
        obs, info = env.reset(options={"prompt": "i loved this film and the acting"})
    assert obs["input_ids"][-4:].tolist() == [bos] + ids[-3:]
    assert info["prompt"] == "and the acting"


def test_non_integer_action_is_a_type_error(env_kwargs):
    env = TextGenEnv(**env_kwargs)
    env.reset(seed=0)
    with pytest.raises(TypeError, match="integer token ids"):
        env.step(5.0)
    with pytest.raises(ValueError, match="single token id"):
        env.step([5, 6])
