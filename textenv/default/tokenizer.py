"""A word-level tokenizer trained on the review corpus, wrapped for transformers.

Why word-level: the grammar has a couple of hundred words, so every word is one token, the vocabulary is
tiny and a sampled completion reads word by word. Why GPT-2's byte-level pre-tokenizer in front of it:
a word carries its leading space ("Ġgreat"), exactly as in GPT-2, so decoding a completion on its own
gives " great." and ``prompt + completion`` is the full text, with no guessing about where spaces go.
Runs of whitespace are collapsed and the ends stripped first, so ``prompt + " " + completion`` also
tokenizes to the same ids.

The tokenizer prepends ``<|bos|>`` itself (a post-processor), because the SFT model was trained on
``<|bos|> review <|eos|>``: ``tokenizer("The movie")`` already starts with bos; do not add another.
"""

from __future__ import annotations

BOS, EOS, PAD, UNK = "<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3 in this order


def train_tokenizer(texts: list[str], min_frequency: int = 1):
    """Train the word-level tokenizer on ``texts`` and return a ``PreTrainedTokenizerFast``.

    Deterministic: the vocabulary is the specials, then words by descending frequency (ties by the
    trainer's stable order). Padding is on the left by default, as the text environment expects.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if not texts:
        raise ValueError("train_tokenizer needs at least one text, got an empty list")
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS), min_frequency=min_frequency)
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=64,
    )
