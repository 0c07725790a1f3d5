"""SamplingConfig: temperature, top-k, top-p, validation."""

import math

import numpy as np
import pytest
import torch

from textenv.text.sampling import SamplingConfig

NEG_INF = float("-inf")


def test_defaults_leave_logits_unchanged():
    logits = torch.randn(2, 6)
    assert torch.equal(SamplingConfig().sampling_logits(logits), logits)


def test_temperature_divides():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    cfg = SamplingConfig(temperature=0.5)
    assert torch.allclose(cfg.sampling_logits(logits), logits * 2)
    assert torch.allclose(cfg.reference_logits(logits), logits * 2)


def test_top_k_keeps_the_k_largest():
    out = SamplingConfig(top_k=2).sampling_logits(torch.tensor([[1.0, 3.0, 2.0, 0.0]]))
    assert out.tolist() == [[NEG_INF, 3.0, 2.0, NEG_INF]]


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.tensor([[math.log(0.2), math.log(0.5), math.log(0.3)]])
    # sorted: 0.5, 0.3, 0.2. Mass before each: 0, 0.5, 0.8.
    keep = torch.isfinite(SamplingConfig(top_p=0.6).sampling_logits(logits))
    assert keep.tolist() == [[False, True, True]]
    keep = torch.isfinite(SamplingConfig(top_p=0.5).sampling_logits(logits))
    assert keep.tolist() == [[False, True, False]]
    keep = torch.isfinite(SamplingConfig(top_p=0.01).sampling_logits(logits))
    assert keep.tolist() == [[False, True, False]]  # the most likely token always survives


def test_order_is_temperature_then_top_k_then_top_p():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    cfg = SamplingConfig(temperature=2.0, top_k=3, top_p=0.7)
    scaled = logits / 2.0
    probs3 = torch.softmax(scaled[0, :3], -1)  # top-k renormalised over 3 tokens
    expected_keep = [True, probs3[0].item() < 0.7, False, False]
    expected_keep[2] = probs3[:2].sum().item() < 0.7
    out = cfg.sampling_logits(logits)
    assert torch.isfinite(out)[0].tolist() == expected_keep
    assert torch.allclose(out[0, 0], scaled[0, 0])


def test_reference_ignores_top_k_and_top_p():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    ref = SamplingConfig(temperature=2.0, top_k=1, top_p=0.1).reference_logits(logits)
    assert torch.isfinite(ref).all()


def test_sample_only_draws_kept_tokens():
    cfg = SamplingConfig(top_k=2)
    logits = torch.tensor([[0.0, 5.0, 4.9, 0.0]]).repeat(200, 1)
    tokens = cfg.sample(logits, generator=torch.Generator().manual_seed(0))
    assert set(tokens.tolist()) <= {1, 2}


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"temperature": 0.0}, ValueError, "temperature must be a finite number > 0"),
        ({"temperature": float("nan")}, ValueError, "temperature"),
        ({"temperature": "hot"}, TypeError, "temperature must be a number"),
        ({"top_k": -1}, ValueError, r"top_k \(0 disables it\) must be an int >= 0, got -1"),
        ({"top_k": 2.5}, TypeError, r"top_k \(0 disables it\) must be an int >= 0, got float 2.5"),
        ({"top_k": True}, TypeError, "got bool True"),
        ({"top_p": 0.0}, ValueError, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.5}, ValueError, r"top_p must be in \(0, 1\]"),
    ],
)
def test_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        SamplingConfig(**kwargs)


def test_numpy_integer_top_k_is_an_int():
    cfg = SamplingConfig(top_k=np.int64(2))
    assert cfg.top_k == 2 and type(cfg.top_k) is int
    assert cfg == SamplingConfig(top_k=2)
