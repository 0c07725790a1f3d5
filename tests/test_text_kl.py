"""KL estimators on distributions small enough to work out by hand."""

import math

import pytest
import torch

from rlcore.kl import ESTIMATORS, full_kl, kl_penalty

# Two tokens: the policy p = [3/4, 1/4], the reference q = [1/2, 1/2].
P = torch.tensor([0.75, 0.25])
Q = torch.tensor([0.5, 0.5])
LOGITS, REF_LOGITS = P.log(), Q.log()


def sampled(token: int):
    return P.log()[token], Q.log()[token]


def test_k1_abs_k2_k3_by_hand_for_token_0():
    logp, ref_logp = sampled(0)  # log(3/4), log(1/2): log ratio = log(3/2)
    lr = math.log(1.5)
    assert kl_penalty(logp, ref_logp, "k1").item() == pytest.approx(lr)
    assert kl_penalty(logp, ref_logp, "abs").item() == pytest.approx(lr)
    assert kl_penalty(logp, ref_logp, "k2").item() == pytest.approx(0.5 * lr**2)
    # r = q/p = 2/3: (r - 1) - log r = -1/3 + log(3/2)
    assert kl_penalty(logp, ref_logp, "k3").item() == pytest.approx(-1 / 3 + lr)


def test_k1_negative_abs_positive_for_token_1():
    logp, ref_logp = sampled(1)  # log(1/4) - log(1/2) = -log 2
    assert kl_penalty(logp, ref_logp, "k1").item() == pytest.approx(-math.log(2))
    assert kl_penalty(logp, ref_logp, "abs").item() == pytest.approx(math.log(2))
    # r = 2: (2 - 1) - log 2
    assert kl_penalty(logp, ref_logp, "k3").item() == pytest.approx(1 - math.log(2))


def test_full_kl_by_hand():
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)  # 0.130812...
    got = kl_penalty(None, None, "full", logits=LOGITS, ref_logits=REF_LOGITS)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.1308121, abs=1e-6)


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_unbiased_estimators_average_to_the_exact_kl(estimator):
    # E_{a~p}[k(a)] over the two tokens, weighted exactly by p.
    logp, ref_logp = P.log(), Q.log()
    expected = full_kl(LOGITS, REF_LOGITS)
    per_token = kl_penalty(logp, ref_logp, estimator)
    assert (P * per_token).sum().item() == pytest.approx(expected.item(), abs=1e-6)


def test_equal_distributions_give_zero_for_every_estimator():
    logp = torch.log_softmax(torch.randn(3, 5), -1)
    tokens = torch.tensor([0, 3, 4])
    lp = logp.gather(1, tokens[:, None])[:, 0]
    for est in ESTIMATORS:
        out = kl_penalty(lp, lp.clone(), est, logits=logp, ref_logits=logp.clone())
        assert out.shape == (3,)
        assert torch.allclose(out, torch.zeros(3), atol=1e-6), est


def test_full_kl_ignores_tokens_the_policy_masked_out_and_is_inf_when_reference_cannot_sample():
    logits = torch.tensor([0.0, float("-inf")])  # policy: token 0 only
    ref = torch.tensor([0.0, 0.0])  # reference: uniform
    assert full_kl(logits, ref).item() == pytest.approx(math.log(2))
    assert math.isinf(full_kl(ref, logits).item())


def test_shapes_are_kept_and_batched():
    logp = torch.log(torch.rand(4, 7))
    ref = torch.log(torch.rand(4, 7))
    for est in ("k1", "abs", "k2", "k3"):
        assert kl_penalty(logp, ref, est).shape == (4, 7)
    assert full_kl(torch.randn(4, 7, 11), torch.randn(4, 7, 11)).shape == (4, 7)


def test_errors():
    with pytest.raises(ValueError, match="unknown kl estimator 'k4'"):
        kl_penalty(torch.zeros(2), torch.zeros(2), "k4")
    with pytest.raises(ValueError, match="needs logits= and ref_logits="):
        kl_penalty(torch.zeros(2), torch.zeros(2), "full")
    with pytest.raises(ValueError, match="same shape"):
        kl_penalty(torch.zeros(2), torch.zeros(3), "k1")
