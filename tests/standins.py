"""Offline stand-ins for Hub models: random tiny models of the real architectures, with tokenizers of the real
kinds, built here and saved to a folder (nothing is downloaded).

- ``save_gpt2``: a GPT-2 (``GPT2LMHeadModel``) with a GPT-2-style byte-level BPE tokenizer (``<|endoftext|>``
  is bos, eos and unk; no pad token; no special tokens added): the stand-in of ``gpt2``.
- ``save_distilbert``: a 2-label ``DistilBertForSequenceClassification`` (NEGATIVE, POSITIVE) with its own
  lower-casing WordPiece tokenizer ([CLS] text [SEP]): the stand-in of ``lvwerra/distilbert-imdb``.
- ``make_llama``: a ``LlamaForCausalLM`` with a Llama-style tokenizer (BPE, ``<s>`` prepended, ``</s>`` eos,
  no pad token).
- ``save_imdb``: a ``datasets`` ``save_to_disk`` folder shaped like ``stanfordnlp/imdb`` (``text`` and ``label``
  columns, train and test splits): the stand-in of the Hub dataset.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

POSITIVE = "great wonderful loved superb moving brilliant fun lovely".split()
NEGATIVE = "awful boring hated dull painful weak clumsy lifeless".split()
NOUNS = "movie film story plot acting ending music actor director script".split()


def reviews(n: int, seed: int = 0) -> list[str]:
    """``n`` made-up reviews of a few sentences (long enough to be cut to prompts)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = POSITIVE if rng.random() < 0.5 else NEGATIVE
        sentences = [f"The {rng.choice(NOUNS)} was {rng.choice(words)} and {rng.choice(words)}."
                     for _ in range(rng.randint(2, 5))]
        out.append(f"I watched this {rng.choice(NOUNS)} yesterday. " + " ".join(sentences) +
                   " CURIOUSLY, it had a soundtrack<br /><br />of its own.")
    return out


def corpus() -> list[str]:
    return reviews(300, seed=1)


def gpt2_tokenizer(model_max_length: int = 1024):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    eot = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eot, eos_token=eot, unk_token=eot,
                                   model_max_length=model_max_length, clean_up_tokenization_spaces=False)


def save_gpt2(path: Path, seed: int = 0) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    path = Path(path)
    tok = gpt2_tokenizer()
    eot = tok.eos_token_id
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1, n_head=2, bos_token_id=eot,
                        eos_token_id=eot, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    GPT2LMHeadModel(config).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def wordpiece_tokenizer(model_max_length: int = 512):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(corpus(), trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=model_max_length)


def make_distilbert(tok, seed: int = 1, max_positions: int = 64):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(seed)
    config = DistilBertConfig(vocab_size=len(tok), dim=32, n_layers=1, n_heads=2, hidden_dim=64,
                              max_position_embeddings=max_positions, num_labels=2,
                              id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1},
                              pad_token_id=tok.pad_token_id, dropout=0.0, attention_dropout=0.0,
                              seq_classif_dropout=0.0, initializer_range=0.2)  # 0.2: scores that differ by text
    return DistilBertForSequenceClassification(config).eval()


def save_distilbert(path: Path, seed: int = 1, model_max_length: int = 512) -> Path:
    path = Path(path)
    tok = wordpiece_tokenizer(model_max_length)
    make_distilbert(tok, seed).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def llama_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"]))
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def make_llama(tok, seed: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=None,
                         initializer_range=0.2)
    return LlamaForCausalLM(config).eval()


def save_imdb(path: Path, n_train: int = 40, n_test: int = 8) -> Path:
    from datasets import Dataset, DatasetDict

    path = Path(path)
    train, test = reviews(n_train, seed=2), reviews(n_test, seed=3)
    DatasetDict({
        "train": Dataset.from_dict({"text": train, "label": [i % 2 for i in range(n_train)]}),
        "test": Dataset.from_dict({"text": test, "label": [i % 2 for i in range(n_test)]}),
    }).save_to_disk(str(path))
    return path
