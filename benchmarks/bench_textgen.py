"""TextGen-v0 speed: the KV cache keeps a step O(1) in the generated length, and rollouts keep up with generate.

    python benchmarks/bench_textgen.py
    python benchmarks/bench_textgen.py --threads 1 --num-envs 64 --new-tokens 24 --episodes 3
    python benchmarks/bench_textgen.py --skip 1 --task-dir /tmp/tiny   # after: python -m textenv.default.build --tiny --out /tmp/tiny

(1) Time of one env step at the 8th and at the 128th generated token, on a random GPT-2 of the default
    size (12 layers, 768 wide, 50257 logits) with n_positions=256. Without a KV cache the 128th step would
    re-run 16x more tokens; the goal is a ratio <= 1.5x.
(2) Rollout tokens/s through TextGenVectorEnv with --num-envs rows (reference log-probs, the KL penalty and
    reward-model scoring of finished episodes included) against ``model.generate`` of the same model at
    the same batch size, in the same run; the goal is a ratio >= 0.5x. Two generate baselines:
      generate, fixed length   exactly --new-tokens tokens per row (min_new_tokens): generate at its fastest;
      generate, stops at EOS   rows end at a sampled EOS and idle until the longest ends (generate-then-score
                               rollouts, as in TRL); tokens counted up to and including each row's EOS.
    Ways of choosing actions, each set against the generate with the same length rule ("goal" marks it):
      random               uniform token ids, no policy (mode b): one reference forward per step; EOS is
                           rare, so most episodes run the full length, but they end at different steps;
      random, fixed length the same with stop_at_eos=False: every episode lasts --new-tokens steps and all
                           rows end together, so the env does generate's work plus the KL and one batched
                           reward-model call per --new-tokens steps;
      policy = ref         sampled from the reference itself through a shared IncrementalLM (mode a): the
                           agent's forward and the env's are one and the same (the memo), KL = 0;
      policy copy          sampled from a separate copy of the model (mode a): two forwards per step, as in
                           RLHF training.
    When episodes end at different steps (same-step autoreset), most steps restart a few rows and score
    the finished texts with the reward model. The restarts cost no forward once a prompt's prefill is in
    the reference's prompt cache (the env fills it with its prompt list at the first step); the reward
    model's call remains, and on a CPU with a model this small every call costs about as much as a
    generation step, so the sampled modes sit well below fixed-length generate (printed as "vs fixed").
    Uses the embedded default task (textenv/default/artifacts) when it exists (or --task-dir), else a
    random GPT-2 of similar size with a word-level tokenizer and a length reward.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import numpy as np
import torch

WORDS = ("the a movie film story plot actor acting was is were very really quite not good great fine bad awful boring "
         "dull fun lovely and but it this i loved hated liked review ending music").split()


def word_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def random_gpt2(vocab_size: int, n_positions: int, n_layer: int, n_embd: int, n_head: int, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                        eos_token_id=1, bos_token_id=1, pad_token_id=0)
    return GPT2LMHeadModel(config).eval()


def length_reward(prompts, completions):
    return [float(len(c.split())) for c in completions]


PROMPTS = ["the movie was", "i loved this film", "the acting", "this story is", "the ending was not", "it was"]


# -- (1) step time against the generated length --------------------------------------------------------------


def step_time_vs_length(args) -> None:
    from textenv.text.env import TextGenEnv

    model = random_gpt2(50257, 256, args.big_layers, args.big_embd, args.big_heads)
    long_run = 136  # step 128 must not be the episode's last (that one also scores the text)
    env = TextGenEnv(model=model, tokenizer=word_tokenizer(), reward=length_reward, prompts=PROMPTS,
                     max_new_tokens=long_run, max_prompt_tokens=16, stop_at_eos=False, device="cpu")
    rng = np.random.default_rng(0)
    times = {8: [], 128: []}
    for episode in range(args.episodes + 1):  # the first episode warms up
        env.reset(seed=episode)
        for t in range(1, long_run + 1):
            action = int(rng.integers(3, len(WORDS) + 3))
            start = time.perf_counter()
            env.step(action)
            elapsed = time.perf_counter() - start
            if t in times and episode > 0:
                times[t].append(elapsed)
    t8, t128 = statistics.median(times[8]), statistics.median(times[128])
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"(1) step time, random GPT-2 {args.big_layers}x{args.big_embd} ({n_params:.0f}M params), 1 env, "
          f"median of {args.episodes} episodes")
    print(f"    token   8: {t8 * 1e3:7.2f} ms")
    print(f"    token 128: {t128 * 1e3:7.2f} ms")
    print(f"    ratio 128/8: {t128 / t8:.2f}x  (goal <= 1.5x)")


# -- (2) rollout throughput against generate --------------------------------------------------------------


def load_task(args):
    """(model, tokenizer, reward, prompts, label): --task-dir, else the default task, else a random stand-in."""
    try:
        if args.task_dir:
            root = Path(args.task_dir)
            sft, rm, prompt_file = root / "sft", root / "reward", root / "prompts_train.jsonl"
        else:
            import textenv.default as default

            sft, rm = default.sft_path(), default.reward_path()
            prompt_file = default.prompts_path("train")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from textenv.text.prompts import load_prompts

        model = AutoModelForCausalLM.from_pretrained(str(sft)).eval()
        return model, AutoTokenizer.from_pretrained(str(sft)), str(rm), load_prompts(prompt_file), f"task at {sft.parent}"
    except (ImportError, AttributeError, FileNotFoundError, OSError) as err:
        print(f"    (default task not available: {type(err).__name__}: {err}; using a random stand-in)")
    tok = word_tokenizer()
    model = random_gpt2(len(tok), 64, 3, 128, 4)
    return model, tok, length_reward, PROMPTS, "random GPT-2 3x128 stand-in, length reward"


MODES = {
    "random": "uniform token ids, no policy (mode b)",
    "random, fixed length": "the same with stop_at_eos=False: every episode is --new-tokens long, like generate",
    "policy = ref": "sampled from the reference through the shared IncrementalLM (mode a, one forward)",
    "policy copy": "sampled from a separate copy of the model (mode a, two forwards per step, as in RLHF training)",
}
# Which generate each env mode is set against: the same length rule (fixed, or ends at a sampled EOS).
BASELINE = {"random": "fixed", "random, fixed length": "fixed", "policy = ref": "eos", "policy copy": "eos"}


class EnvRollout:
    """A TextGenVectorEnv and an action source; ``run(steps)`` -> (seconds, tokens) for ``steps`` vector steps."""

    def __init__(self, model, tok, reward, prompts, args, mode: str) -> None:
        from textenv.text.decoding import IncrementalLM
        from textenv.text.vector import TextGenVectorEnv

        policy = {"policy = ref": model, "policy copy": IncrementalLM(copy.deepcopy(model))}.get(mode)
        self.env = TextGenVectorEnv(args.num_envs, model=model, tokenizer=tok, reward=reward, prompts=prompts, policy=policy,
                                    max_new_tokens=args.new_tokens, max_prompt_tokens=args.prompt_tokens, device="cpu",
                                    stop_at_eos=mode != "random, fixed length")
        self.agent = self.env.core.policy_lm  # what an agent holds: the very object the env calls
        self.gen = torch.Generator().manual_seed(0)
        self.rng = np.random.default_rng(0)
        self.obs, _ = self.env.reset(seed=0)
        self.steps = args.new_tokens
        self.run()  # warm-up episode

    def act(self):
        if self.agent is None:
            return self.rng.integers(0, self.env.single_action_space.n, self.env.num_envs)
        logits = self.agent.next_token_logits(self.obs["input_ids"], self.obs["attention_mask"])
        return self.env.sampling.sample(logits, generator=self.gen).numpy()

    def run(self) -> tuple[float, int]:
        start = time.perf_counter()
        for _ in range(self.steps):
            self.obs, *_ = self.env.step(self.act())
        return time.perf_counter() - start, self.steps * self.env.num_envs


class Generate:
    """``model.generate`` for --num-envs prompts, at most --new-tokens tokens per row.

    ``stop_at_eos=False``: exactly --new-tokens tokens per row (min_new_tokens), all of them counted.
    ``stop_at_eos=True``: rows end at a sampled EOS and idle (padding) until the longest row ends, as in
    generate-then-score rollouts (TRL's PPOTrainer); the tokens counted are each row's up to and including EOS,
    which is what an env episode of the same response takes in steps.
    """

    def __init__(self, model, tok, prompts, args, stop_at_eos: bool) -> None:
        rng = np.random.default_rng(0)
        batch = [prompts[i] for i in rng.integers(0, len(prompts), args.num_envs)]
        tok.padding_side = "left"
        self.model, self.new, self.eos = model, args.new_tokens, tok.eos_token_id
        self.enc = tok(batch, return_tensors="pt", padding=True, truncation=True, max_length=args.prompt_tokens)
        self.kwargs = dict(do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=args.new_tokens,
                           pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        if not stop_at_eos:
            self.kwargs["min_new_tokens"] = args.new_tokens
        self.run()  # warm-up

    @torch.no_grad()
    def run(self) -> tuple[float, int]:
        start = time.perf_counter()
        out = self.model.generate(**self.enc, **self.kwargs)
        elapsed = time.perf_counter() - start
        new = out[:, self.enc["input_ids"].shape[1]:]  # (B, T <= max_new_tokens)
        is_eos = new == self.eos
        # Tokens up to and including the first EOS, or all max_new_tokens of a row that never ends.
        lengths = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, torch.full_like(is_eos[:, 0], self.new, dtype=torch.long))
        return elapsed, int(lengths.sum())


def rollout_vs_generate(args) -> None:
    from textenv.text.loading import quiet_loading

    with quiet_loading():
        model, tok, reward, prompts, label = load_task(args)
    print(f"(2) rollout tokens/s, {args.num_envs} envs, at most {args.new_tokens} new tokens per episode: {label}")
    runners = {"generate, fixed length": Generate(model, tok, prompts, args, stop_at_eos=False),
               "generate, stops at EOS": Generate(model, tok, prompts, args, stop_at_eos=True)}
    runners.update({mode: EnvRollout(model, tok, reward, prompts, args, mode) for mode in MODES})
    # Interleaved rounds: background load on a shared machine hits every runner of a round alike, so the ratio
    # is taken within each round (env tokens/s over its generate's tokens/s) and the median over rounds reported.
    speed = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, runner in runners.items():
            seconds, tokens = runner.run()
            speed[name].append(tokens / seconds)
    print(f"    {'':24s} {'median':>9s} tokens/s   ratio: median over {args.rounds} interleaved rounds of the same round's ratio")
    for name in runners:
        line = f"    {name:24s} {statistics.median(speed[name]):9.0f}"
        if name in MODES:
            for base in ("fixed", "eos"):
                ref = speed["generate, fixed length" if base == "fixed" else "generate, stops at EOS"]
                ratio = statistics.median(e / g for e, g in zip(speed[name], ref))
                mark = " (goal >= 0.5x)" if BASELINE[name] == base else ""
                line += f"   vs {base:5s} {ratio:4.2f}x{mark:15s}"
            line += f"  {MODES[name]}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=24, help="max_new_tokens for part (2)")
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--episodes", type=int, default=3, help="timed episodes for part (1)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds for part (2)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--big-layers", type=int, default=12)
    parser.add_argument("--big-embd", type=int, default=768)
    parser.add_argument("--big-heads", type=int, default=12)
    parser.add_argument("--task-dir", help="a built task (python -m textenv.default.build --out DIR) instead of the default")
    parser.add_argument("--skip", choices=["1", "2"], help="skip part 1 or part 2")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    if args.skip != "1":
        step_time_vs_length(args)
    if args.skip != "2":
        rollout_vs_generate(args)


if __name__ == "__main__":
    main()
