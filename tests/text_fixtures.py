"""Tiny, random, offline language models for the text-env tests.

Everything is built from configs (nothing from the Hugging Face hub), saved to a temporary directory and
then loaded back BY PATH through the env's own loading code, exactly like a user's checkpoint.

Import the fixtures into a test module with ``from text_fixtures import *``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, PreTrainedTokenizerFast

WORDS = (
    "the a movie film story plot actor acting was is were very really quite not good great fine bad awful "
    "boring dull fun lovely and but it this i loved hated liked review ending music"
).split()
SPECIALS = ["<pad>", "<eos>", "<unk>"]
MODEL_VOCAB = 64  # larger than the tokenizer's 38 entries: V comes from the model, not the tokenizer
N_POSITIONS = 64


def make_tokenizer(pad: bool = True, eos: bool = True, extra_words: int = 0) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``WORDS`` (+ ``extra_words`` made-up words)."""
    words = list(WORDS) + [f"w{i}" for i in range(extra_words)]
    vocab = {tok: i for i, tok in enumerate(SPECIALS + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    kwargs = {"unk_token": "<unk>"}
    if pad:
        kwargs["pad_token"] = "<pad>"
    if eos:
        kwargs["eos_token"] = "<eos>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def tiny_gpt2_config(vocab_size: int = MODEL_VOCAB, n_positions: int = N_POSITIONS, **kw) -> GPT2Config:
    cfg = dict(
        vocab_size=vocab_size, n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=1, eos_token_id=1, pad_token_id=0,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    cfg.update(kw)
    return GPT2Config(**cfg)


def make_lm(seed: int = 0, **config_kw) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(tiny_gpt2_config(**config_kw)).eval()
    # Random init gives nearly uniform next-token distributions; sharpen them so the tests see real
    # differences between tokens (top-k, KL, EOS).
    with torch.no_grad():
        model.transformer.wte.weight.mul_(20.0)
    return model


def save_lm(path: Path, seed: int = 0, tokenizer: PreTrainedTokenizerFast | None = None, **config_kw) -> Path:
    path = Path(path)
    make_lm(seed, **config_kw).save_pretrained(path)
    (tokenizer or make_tokenizer()).save_pretrained(path)
    return path


def make_rm(seed: int = 1, num_labels: int = 1, **config_kw) -> GPT2ForSequenceClassification:
    torch.manual_seed(seed)
    return GPT2ForSequenceClassification(tiny_gpt2_config(num_labels=num_labels, **config_kw)).eval()


def save_rm(path: Path, seed: int = 1, num_labels: int = 1, reward_mean: float | None = None,
            reward_std: float | None = None) -> Path:
    path = Path(path)
    model = make_rm(seed, num_labels)
    if reward_mean is not None:
        model.config.reward_mean = reward_mean
    if reward_std is not None:
        model.config.reward_std = reward_std
    model.save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return path


PROMPTS = ["the movie was", "i loved this film", "the acting", "this story is", "the ending was not"]


def length_reward(prompts: list[str], completions: list[str]):
    """A transparent reward: the number of words in the completion."""
    return [float(len(c.split())) for c in completions]


@pytest.fixture(scope="session")
def lm_dir(tmp_path_factory) -> Path:
    return save_lm(tmp_path_factory.mktemp("lm"))


@pytest.fixture(scope="session")
def rm_dir(tmp_path_factory) -> Path:
    return save_rm(tmp_path_factory.mktemp("rm"))


@pytest.fixture(scope="session")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return path


@pytest.fixture
def env_kwargs(lm_dir, rm_dir) -> dict:
    """Keyword arguments for a small TextGen env loaded by path."""
    return dict(model=str(lm_dir), reward=str(rm_dir), prompts=list(PROMPTS), max_new_tokens=6,
                max_prompt_tokens=6, device="cpu")
