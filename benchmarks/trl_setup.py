"""Setup for benchmarks/bench_vs_trl.py, everything but the measurement: the shapes, the task's models and data
as each side reads them (TRL's are patched copies for transformers 4.44; shape (a) builds a random GPT-2), the TRL
virtualenv and one TRL run in it (benchmarks/trl_worker.py), our RLHFConfig at a shape and one run of ours, learn
mode's scorer of a saved policy, and the start of a run (the TRL venv checked or built, both sides' versions)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from agents.rlhf import KLConfig, RLHFConfig, default_gold, evaluate_policy, rlhf_ppo_config, train_rlhf
from textenv import default
from textenv.text.config import TextGenConfig
from textenv.text.loading import load_causal_lm
from textenv.text.prompts import load_prompts

WORKER = Path(__file__).resolve().parent / "trl_worker.py"
TORCH_PIN = "torch==2.13.0"  # first, from the local CPU wheel: an unpinned torch would pull CUDA wheels
TRL_REQUIREMENTS = ("trl==0.11.4", "transformers==4.44.2", "numpy<2", "pyarrow==18.1.0", "datasets==3.0.1",
                    "pandas==2.2.3", "rich", "accelerate")
PACKAGES = ("torch", "trl", "transformers", "accelerate", "datasets", "numpy", "tokenizers", "pyarrow", "pandas")


@dataclass(frozen=True)
class Shape:
    """One iteration's shape, identical on both sides."""

    batch: int
    """responses per iteration: TRL's batch_size, our num_envs"""
    minibatch: int
    """responses per minibatch: TRL's mini_batch_size, our num_envs / n_minibatches"""
    epochs: int
    """passes over each batch"""
    max_new_tokens: int
    """response length limit"""
    max_prompt_tokens: int
    """prompt budget (tokens, BOS included)"""


SHAPES = {
    "a": ("random GPT-2 4x256, vocab 2048",
          Shape(batch=64, minibatch=16, epochs=4, max_new_tokens=16, max_prompt_tokens=8)),
    "b": ("default task (shipped SFT + RM)",
          Shape(batch=32, minibatch=8, epochs=4, max_new_tokens=24, max_prompt_tokens=12)),
}
LEARN_SHAPE = SHAPES["b"][1]  # the main job's: examples/rlhf_ppo.py


@dataclass
class Task:
    """The same models and prompts, as each side reads them (TRL's are patched copies for transformers 4.44)."""

    ours_model: str | None
    ours_reward: str | None
    ours_prompts: str | None
    trl_model: str
    trl_reward: str
    trl_prompts: str


# ---------------------------------------------------------------------------------------------- the TRL venv
VERSIONS = """
import importlib.metadata, json, sys
def version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
print(json.dumps({name: version(name) for name in sys.argv[1:]}))
"""


def venv_versions(python: Path) -> dict[str, str | None]:
    """The versions of PACKAGES installed in a venv (None: not installed)."""
    out = subprocess.run([str(python), "-c", VERSIONS, *PACKAGES], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def ensure_venv(path: Path, requirements, wanted: dict[str, str]) -> tuple[Path, dict]:
    """A benchmark virtualenv's python and its package versions: created when missing, and ``TORCH_PIN`` then
    ``requirements`` installed into it unless it already holds the ``wanted`` versions (name -> version)."""
    python = path / "bin" / "python"
    if not python.exists():
        print(f"creating the virtualenv {path} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    versions = venv_versions(python)
    if any(versions.get(name) != version for name, version in wanted.items()) or versions["torch"] is None:
        for pins in ([TORCH_PIN], list(requirements)):
            print(f"pip install {' '.join(pins)} into {path} ...", flush=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", *pins], check=True)
        versions = venv_versions(python)
    return python, versions


def ensure_trl_venv(path: Path) -> tuple[Path, dict]:
    """The TRL 0.11.4 venv (benchmarks/trl_worker.py's)."""
    return ensure_venv(path, TRL_REQUIREMENTS, {"trl": "0.11.4", "transformers": "4.44.2"})


def worker_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", CUDA_VISIBLE_DEVICES="",
               TOKENIZERS_PARALLELISM="false")  # the AVX2 kernel pins, when set, pass on: same kernels both sides
    return env


def run_trl(python: Path, task: Task, shape: Shape, args, iterations: int, seed: int, out_json: Path, *,
            fixed_length: bool, budget: int = 0, save_at=(), save_dir: Path | None = None) -> dict:
    """One TRL run in its venv (benchmarks/trl_worker.py); returns the JSON it wrote. The PPO constants come
    from our rlhf_ppo_config, so both sides read them from one place."""
    ppo = rlhf_ppo_config()
    cmd = [str(python), str(WORKER), "--model", task.trl_model, "--reward", task.trl_reward, "--prompts",
           task.trl_prompts, "--out-json", str(out_json), "--iterations", str(iterations),
           "--batch-size", str(shape.batch), "--mini-batch-size", str(shape.minibatch),
           "--ppo-epochs", str(shape.epochs), "--max-new-tokens", str(shape.max_new_tokens),
           "--max-prompt-tokens", str(shape.max_prompt_tokens), "--lr", str(args.trl_lr or args.lr),
           "--lr-schedule", args.lr_schedule if budget else "constant", "--budget", str(budget),
           "--kl-coef", str(args.trl_kl_coef if args.trl_kl_coef is not None else args.kl_coef), "--kl-target", str(args.kl_target), "--kl-horizon", str(args.kl_horizon),
           "--gamma", str(ppo.gamma), "--lam", str(ppo.gae_lambda), "--clip", str(ppo.clip_coef),
           "--vf-coef", str(ppo.vf_coef), "--max-grad-norm", str(ppo.max_grad_norm),
           "--seed", str(seed), "--threads", str(args.threads)]
    if fixed_length:
        cmd.append("--fixed-length")
    if save_at:
        cmd += ["--save-at", *map(str, save_at), "--save-dir", str(save_dir)]
    quiet = subprocess.DEVNULL if args.quiet else None
    subprocess.run(cmd, check=True, env=worker_env(), stdout=quiet)
    return json.loads(out_json.read_text())


# ---------------------------------------------------------------------------------------------- models and data
def patched_copy(src: Path, dst: Path) -> str:
    """A copy of a model folder whose tokenizer transformers 4.44 can load."""
    shutil.copytree(src, dst)
    path = dst / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2))
    return str(dst)


def default_task(tmp: Path) -> Task:
    return Task(None, None, None, patched_copy(default.sft_path(), tmp / "trl-sft"),
                patched_copy(default.reward_path(), tmp / "trl-reward"), str(default.prompts_path("train")))


def random_task(tmp: Path, vocab_size: int = 2048, prompt_tokens: int = 8, n_prompts: int = 512) -> Task:
    """Shape (a): a random 4x256 GPT-2 and a random classifier of that size, the shipped tokenizer padded to
    ``vocab_size`` with dummy words, and prompts of exactly ``prompt_tokens`` tokens (BOS + shipped words)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    # 1. the tokenizer: every id a word, so whatever a random model samples decodes to text
    spec = json.loads((default.sft_path() / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    shipped = dict(vocab)
    vocab.update({"\u0120" + dummy_word(i): i for i in range(len(vocab), vocab_size)})
    torch.manual_seed(0)
    # No dropout, like the shipped models: TRL samples with the model in whatever mode its last step left it.
    size = dict(vocab_size=vocab_size, n_positions=64, n_layer=4, n_embd=256, n_head=4, bos_token_id=1, eos_token_id=2,
                pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    folders = {"lm": (GPT2LMHeadModel(GPT2Config(**size)), default.sft_path()),
               "rm": (GPT2ForSequenceClassification(GPT2Config(**size, num_labels=1)), default.reward_path())}
    for name, (model, shipped_dir) in folders.items():
        folder = tmp / f"random-{name}"
        model.eval().save_pretrained(folder)
        (folder / "tokenizer.json").write_text(json.dumps(spec))
        shutil.copy(shipped_dir / "tokenizer_config.json", folder / "tokenizer_config.json")

    # 2. prompts: a capitalised first word, then words with a leading space, kept when they round-trip
    tokenizer = AutoTokenizer.from_pretrained(tmp / "random-lm")
    first = [t for t, i in shipped.items() if i > 3 and t[:1].isupper() and not t.startswith("\u0120")]
    rest = [t for t, i in shipped.items() if t.startswith("\u0120") and t[1:].isalpha()]
    rng, prompts = np.random.default_rng(0), []
    while len(prompts) < n_prompts:
        words = [rng.choice(first)] + list(rng.choice(rest, prompt_tokens - 2))
        text = tokenizer.convert_tokens_to_string(words)
        if len(tokenizer(text)["input_ids"]) == prompt_tokens:
            prompts.append(text)
    path = tmp / "random-prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return Task(str(tmp / "random-lm"), str(tmp / "random-rm"), str(path),
                patched_copy(tmp / "random-lm", tmp / "trl-random-lm"),
                patched_copy(tmp / "random-rm", tmp / "trl-random-rm"), str(path))


def dummy_word(i: int) -> str:
    """"qx" and ``i`` in base-26 letters: letters only, so GPT-2's pre-tokenizer keeps it one token."""
    letters = ""
    while True:
        i, r = divmod(i, 26)
        letters = chr(ord("a") + r) + letters
        if i == 0:
            return "qx" + letters


# ---------------------------------------------------------------------------------------------- our side
def ours_config(task: Task, shape: Shape, args, seed: int, responses: int, fixed_length: bool, gold) -> RLHFConfig:
    """Our RLHFConfig at this shape: TRL's batch, epochs and minibatch size, and the learning rate decaying
    linearly over ``responses`` in learn mode (TRL's LambdaLR gives the same rate at every iteration)."""
    if shape.batch % shape.minibatch:
        raise ValueError(f"batch {shape.batch} is not a multiple of minibatch {shape.minibatch}")
    return RLHFConfig(
        env=TextGenConfig(model=task.ours_model, reward=task.ours_reward, prompts=task.ours_prompts,
                          max_new_tokens=shape.max_new_tokens, max_prompt_tokens=shape.max_prompt_tokens,
                          kl_coef=args.kl_coef, device="cpu",
                          stop_at_eos=not fixed_length),  # speed mode: responses of the full length
        num_envs=shape.batch,
        kl=KLConfig(target=args.kl_target, horizon=args.kl_horizon),
        ppo=rlhf_ppo_config(n_epochs=shape.epochs, n_minibatches=shape.batch // shape.minibatch, learning_rate=args.lr,
                            anneal_lr=not fixed_length and args.lr_schedule == "linear",
                            norm_adv_over=args.norm_adv_over),
        responses=responses, gold=gold, seed=seed, device="cpu", mixed_precision=args.mixed_precision,
        log_every=0 if args.quiet or fixed_length else 1,
    )


def train_ours(task: Task, shape: Shape, args, seed: int, *, fixed_length: bool, responses: int, save_at=(),
               save_dir: Path | None = None) -> dict:
    """train_rlhf for ``responses`` responses (``responses / batch`` iterations), saving the policy at ``save_at``."""
    saved, pending = [], sorted(set(save_at))

    def on_iteration(agent, m: dict):
        while pending and m["responses"] >= pending[0]:
            folder = save_dir / f"responses{pending[0]}"
            agent.policy.model.save_pretrained(folder)
            saved.append({"budget": pending.pop(0), "responses": m["responses"], "loop_s": m["loop_s"],
                          "iteration": m["iteration"], "path": str(folder)})

    gold = default_gold(RLHFConfig()) if not fixed_length else None  # the per-iteration judge, outside the clock
    result = train_rlhf(ours_config(task, shape, args, seed, responses, fixed_length, gold), callback=on_iteration)
    if pending:
        raise RuntimeError(f"our run stopped at {result.agent.responses} responses, before the budgets {pending}")
    rows, generated = [], 0
    for h in result.history:
        rows.append({k: h[k] for k in ("iteration", "responses", "rollout_s", "update_s", "loop_s", "rm_score",
                                        "gold_score", "kl", "kl_coef", "learning_rate", "response_length")})
        rows[-1]["tokens"] = h["generated_tokens"] - generated  # this iteration's, dropped partial responses included
        generated = h["generated_tokens"]
    return {"iterations": rows, "saved": saved}


def policy_scorer(task: Task, shape: Shape, args) -> tuple:
    """Learn mode's judge of a saved policy, the same code for both sides: our env samples one completion per
    held-out prompt (the first ``--eval-prompts``) with the policy, the shipped SFT model as the reference, the gold
    judge and seed 10000 + seed. Returns score(model_path, seed) -> mean gold, RM, KL, length; and the prompt count."""
    config = ours_config(task, shape, args, 0, shape.batch, False, "default")
    env_config, gold_fn = config.env, default_gold(config)
    prompts = load_prompts(default.prompts_path("test"))[: args.eval_prompts]

    def score(model_path, seed: int) -> dict:
        out = evaluate_policy(load_causal_lm(model_path, torch.device("cpu")).eval(), env_config, prompts, gold_fn, seed=10_000 + seed)
        return {k: float(np.mean(out[src])) for k, src in (("gold", "gold_score"), ("rm", "rm_score"), ("kl", "kl"),
                                                           ("length", "tokens"))}

    return score, len(prompts)


# ---------------------------------------------------------------------------------------------- start of a run
def prepare_sides(args) -> tuple[Path, dict, dict]:
    """The TRL venv's python (built if needed), its package versions and ours; prints both sides' setup.
    Called after the kernel pins and torch's thread count are set."""
    from transformers import __version__ as transformers_version
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    python, trl_versions = ensure_trl_venv(Path(args.venv))
    ours_versions = {"torch": torch.__version__, "transformers": transformers_version}
    print(f"TRL side ({args.venv}): " + ", ".join(f"{k} {v}" for k, v in trl_versions.items()))
    print(f"our side ({sys.prefix}): " + ", ".join(f"{k} {v}" for k, v in ours_versions.items()) +
          f"; torch threads {torch.get_num_threads()} on both", flush=True)
    if args.mixed_precision:
        from agents.lm import _cpu_has_bf16

        state = "on" if _cpu_has_bf16() else "OFF (this CPU has no native bf16: ours runs fp32 too)"
        print(f"mixed precision: bf16 autocast in our update {state}; TRL side fp32; native kernels on both",
              flush=True)
    return python, trl_versions, ours_versions
