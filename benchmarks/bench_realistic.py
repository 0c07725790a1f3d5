"""TextGen-v0 and one RLHF iteration at a realistic size: GPT-2 small's architecture, random weights.

    python benchmarks/bench_realistic.py                      # batch 16, 8 prompt + 16 new tokens, one thread
    python benchmarks/bench_realistic.py --num-envs 32 --reps 5 --out /tmp/realistic.json
    python benchmarks/bench_realistic.py --device cuda --threads 0 --out $OUT/gpu_check.json

The models (built from configs, random weights, saved to a temporary folder and loaded by path):
  policy / reference  GPT-2 small: 12 layers, 768 wide, 12 heads, 50257 logits; its tokenizer is a byte-level
                      BPE of exactly 50257 entries (GPT-2's 256 byte symbols, 50000 two-symbol merges,
                      <|endoftext|>), built with the `tokenizers` library;
  reward              a random 2-label DistilBERT classifier (6 layers, 768 wide) with its own WordPiece
                      tokenizer: the env decodes the policy's tokens and re-tokenizes the text for it; label 1
                      (the "positive" logit) is the score.

(1) Rollout tokens/s, side by side in one run, every response exactly --new-tokens long:
  generate              ``policy.generate`` (sampling, top_k=0), nothing else;
  generate-then-score   TRL's rollout: ``generate`` with the policy, then one batched reference forward over
                        prompt + response (the log-probs of the response tokens) and the reward model over the
                        decoded texts;
  env, KL               TextGenVectorEnv + agents.rlhf.collect_responses with an LMActorCritic policy whose
                        weights differ from the reference (perturbed), the per-token KL computed by the env;
  env, policy = ref     the same with the policy's LM being the reference module itself (one forward per token).
  Goals: env, KL >= 1.0x generate-then-score; env, policy = ref >= 0.9x generate.
(2) One PPO iteration (train_rlhf, 1 iteration of --num-envs responses) with its time split (rollout / update)
    and its peak memory, full fine-tune against LoRA (r=16), each in a fresh subprocess (CPU: the peak
    resident set, VmHWM, above the process's resident set before any model loads; CUDA:
    torch.cuda.max_memory_allocated). Goal: LoRA peak <= 0.6x the full fine-tune's.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEXT = ("the movie was a quiet surprise and the actors carried every scene with care while the music kept the "
        "story moving toward an ending that nobody in the theater expected at all").split()


def bpe_tokenizer():
    """A byte-level BPE with GPT-2's vocabulary size: 256 byte symbols + 50000 merges + <|endoftext|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {s: i for i, s in enumerate(alphabet)}
    merges = []
    for a in alphabet:  # two-symbol merges, common letters first, until the vocabulary reaches 50256
        for b in alphabet:
            if len(vocab) == 50256:
                break
            vocab[a + b] = len(vocab)
            merges.append((a, b))
    vocab["<|endoftext|>"] = 50256
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def wordpiece_tokenizer():
    """DistilBERT-style WordPiece over characters and a few words, padded to BERT's 30522 entries."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(33, 127)]
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(TEXT)) + chars + ["##" + c for c in chars]
    vocab = {w: i for i, w in enumerate(words + [f"[unused{i}]" for i in range(30522 - len(words))])}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=512)


def build_models(folder: Path, layers: int) -> dict:
    """Save the policy (= reference) and the reward model with their tokenizers under ``folder``; their paths."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = bpe_tokenizer()
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=1024, n_layer=layers, n_embd=768, n_head=12,
                                    bos_token_id=50256, eos_token_id=50256, pad_token_id=50256))
    lm.save_pretrained(folder / "policy")
    tok.save_pretrained(folder / "policy")
    rm = DistilBertForSequenceClassification(DistilBertConfig(num_labels=2, pad_token_id=0))
    rm.save_pretrained(folder / "reward")
    wordpiece_tokenizer().save_pretrained(folder / "reward")
    prompts = [" ".join(TEXT[i:i + 12]) for i in range(len(TEXT) - 12)]  # longer than 8 tokens: cut to 8
    return {"policy": str(folder / "policy"), "reward": str(folder / "reward"), "prompts": prompts}


# -- (1) rollout tokens/s ------------------------------------------------------------------------------------


class Baselines:
    """``generate`` and TRL's generate-then-score on the same prompts (each row cut to --prompt-tokens)."""

    def __init__(self, policy, ref, reward, paths, args, device) -> None:
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(paths["policy"])
        self.tok.padding_side = "left"
        self.rm_tok = AutoTokenizer.from_pretrained(paths["reward"])
        batch = [paths["prompts"][i % len(paths["prompts"])] for i in range(args.num_envs)]
        enc = self.tok(batch, return_tensors="pt", padding=True, truncation=True, max_length=args.prompt_tokens)
        self.enc = {k: v[:, -args.prompt_tokens:].to(device) for k, v in enc.items()}
        self.policy, self.ref, self.reward, self.new = policy, ref, reward, args.new_tokens
        self.kwargs = dict(do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=self.new,
                           min_new_tokens=self.new, pad_token_id=self.tok.pad_token_id)

    @torch.no_grad()
    def generate(self) -> torch.Tensor:
        return self.policy.generate(**self.enc, **self.kwargs)

    @torch.no_grad()
    def generate_then_score(self) -> None:
        out = self.generate()  # (B, P + T)
        mask = torch.ones_like(out)
        mask[:, :self.enc["attention_mask"].shape[1]] = self.enc["attention_mask"]
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.ref(input_ids=out, attention_mask=mask, position_ids=pos, logits_to_keep=self.new + 1).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, out[:, -self.new:, None])  # (B, T, 1)
        texts = self.tok.batch_decode(out, skip_special_tokens=True)
        rm_in = self.rm_tok(texts, return_tensors="pt", padding=True, truncation=True).to(out.device)
        scores = self.reward(**rm_in).logits[:, 1]
        return logp.sum(), scores


def env_rollout(policy_module, ref, reward, reward_tok, paths, args, device):
    """A callable running one env rollout (collect_responses) of --num-envs responses."""
    from agents.lm import LMActorCritic
    from agents.rlhf.responses import collect_responses
    from textenv.text.sampling import SamplingConfig
    from textenv.text.vector import TextGenVectorEnv

    policy = LMActorCritic(policy_module, sampling=SamplingConfig(), device=device)
    env = TextGenVectorEnv(args.num_envs, model=ref, tokenizer=paths["policy"], reward=reward,
                           reward_tokenizer=reward_tok, reward_label=1, prompts=paths["prompts"], policy=policy,
                           max_new_tokens=args.new_tokens, max_prompt_tokens=args.prompt_tokens, stop_at_eos=False,
                           device=device)
    gen = torch.Generator(device).manual_seed(0)
    return lambda: collect_responses(env, policy, 0.1, 0, gen, device)


def timed(runs: dict, reps: int, device) -> dict:
    """Median seconds of each callable, the callables taking turns (a busy machine slows them all alike)."""
    times = {name: [] for name in runs}
    for rep in range(reps + 1):  # the first round warms up
        for name, fn in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if rep:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def rollout_speeds(paths, args, device) -> dict:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    ref = AutoModelForCausalLM.from_pretrained(paths["policy"]).to(device).eval()
    policy = copy.deepcopy(ref)
    with torch.no_grad():  # a policy that differs from the reference, as after some training
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    reward = AutoModelForSequenceClassification.from_pretrained(paths["reward"]).to(device).eval()
    base = Baselines(policy, ref, reward, paths, args, device)
    runs = {"generate": base.generate, "generate-then-score": base.generate_then_score,
            "env, KL": env_rollout(policy, ref, reward, base.rm_tok, paths, args, device),
            "env, policy = ref": env_rollout(ref, ref, reward, base.rm_tok, paths, args, device)}
    tokens = args.num_envs * args.new_tokens
    speed = {name: tokens / s for name, s in timed(runs, args.reps, device).items()}
    print(f"(1) rollout tokens/s, batch {args.num_envs}, {args.prompt_tokens} prompt + {args.new_tokens} new tokens, "
          f"median of {args.reps}")
    for name, v in speed.items():
        print(f"    {name:22s} {v:9.1f} tokens/s")
    ratios = {"env_kl_vs_generate_then_score": speed["env, KL"] / speed["generate-then-score"],
              "env_policy_eq_ref_vs_generate": speed["env, policy = ref"] / speed["generate"],
              "env_kl_vs_generate": speed["env, KL"] / speed["generate"]}
    print(f"    env, KL / generate-then-score:    {ratios['env_kl_vs_generate_then_score']:.2f}x  (goal >= 1.0x)")
    print(f"    env, policy = ref / generate:     {ratios['env_policy_eq_ref_vs_generate']:.2f}x  (goal >= 0.9x)")
    print(f"    env, KL / generate:               {ratios['env_kl_vs_generate']:.2f}x")
    return {"tokens_per_s": speed, "ratios": ratios}


# -- (2) one PPO iteration, full fine-tune and LoRA, each in a fresh process ---------------------------------


def iteration_worker(paths, args, device, lora: bool) -> dict:
    """One train_rlhf iteration; its peak memory above the process's before any model was loaded."""
    from agents.rlhf import LoRAConfig, RLHFConfig, rlhf_ppo_config, train_rlhf
    from textenv.text.config import TextGenConfig

    def status_mb(key: str) -> float:
        # VmHWM (peak resident set) starts afresh at exec, unlike getrusage's ru_maxrss, which a child
        # inherits from the parent that forked it (here: one holding four models).
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB
        raise OSError(f"no {key} in /proc/self/status (Linux only)")

    before = status_mb("VmRSS")
    from textenv.text.rewards import make_reward_fn

    # the env's own scorer of the classifier (its tokenizer is the one saved next to it); label 1: "positive"
    reward = make_reward_fn(paths["reward"], device=device, label=1, normalize=False)
    env = TextGenConfig(model=paths["policy"], reward=reward, prompts=paths["prompts"], max_new_tokens=args.new_tokens,
                        max_prompt_tokens=args.prompt_tokens, stop_at_eos=False, device=str(device))
    config = RLHFConfig(env=env, num_envs=args.num_envs, responses=args.num_envs, device=str(device), gold=None,
                        ppo=rlhf_ppo_config(n_epochs=1, n_minibatches=2), lora=LoRAConfig() if lora else None,
                        mixed_precision=device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = train_rlhf(config)
    row = result.history[-1]
    trainable = sum(p.numel() for p in result.agent.policy.parameters() if p.requires_grad)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else status_mb("VmHWM") - before
    return {"rollout_s": row["rollout_s"], "update_s": row["update_s"], "peak_mb": peak,
            "peak_kind": "cuda max_memory_allocated" if device.type == "cuda" else "peak RSS (VmHWM) growth",
            "trainable_params": trainable}


def iterations(folder: Path, args) -> dict:
    out = {}
    for name, lora in (("full", False), ("lora", True)):
        cmd = [sys.executable, __file__, "--worker", "lora" if lora else "full", "--models", str(folder),
               *sys.argv[1:]]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"the {name} iteration failed:\n{proc.stderr[-3000:]}")
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"(2) one PPO iteration (train_rlhf), {args.num_envs} responses, 1 epoch of 2 minibatches")
    for name, r in out.items():
        print(f"    {name:5s} rollout {r['rollout_s']:6.2f} s  update {r['update_s']:6.2f} s  peak {r['peak_mb']:7.0f} MB "
              f"({r['peak_kind']})  trainable {r['trainable_params'] / 1e6:6.2f}M")
    ratio = out["lora"]["peak_mb"] / out["full"]["peak_mb"]
    print(f"    LoRA peak / full fine-tune peak: {ratio:.2f}x  (goal <= 0.6x)")
    return {**out, "lora_peak_vs_full": ratio}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-envs", type=int, default=16)
    ap.add_argument("--prompt-tokens", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--layers", type=int, default=12, help="GPT-2 small has 12")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-iteration", action="store_true", help="only (1)")
    ap.add_argument("--out", help="write the figures as JSON here")
    ap.add_argument("--worker", choices=("full", "lora"), help=argparse.SUPPRESS)
    ap.add_argument("--models", help=argparse.SUPPRESS)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", "prompt of .* tokens is longer")  # the prompts are cut to --prompt-tokens
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.worker:
        folder = Path(args.models)
        paths = {"policy": str(folder / "policy"), "reward": str(folder / "reward"),
                 "prompts": [" ".join(TEXT[i:i + 12]) for i in range(len(TEXT) - 12)]}
        print(json.dumps(iteration_worker(paths, args, device, args.worker == "lora")))
        return
    with tempfile.TemporaryDirectory() as tmp:
        paths = build_models(Path(tmp), args.layers)
        figures = {"settings": {k: v for k, v in vars(args).items() if k not in ("worker", "models", "out")},
                   "torch": torch.__version__, "rollout": rollout_speeds(paths, args, device)}
        if not args.skip_iteration:
            figures["iteration"] = iterations(Path(tmp), args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(figures, indent=2))
        print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
