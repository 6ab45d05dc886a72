from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from graphprune.train import distill_loss


def test_alpha_zero_is_cross_entropy() -> None:
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 5, generator=gen), torch.randn(6, 5, generator=gen)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    assert torch.allclose(distill_loss(s, t, y, T=4.0, alpha=0.0), F.cross_entropy(s, y))
    smoothed = distill_loss(s, t, y, T=4.0, alpha=0.0, label_smoothing=0.1)
    assert torch.allclose(smoothed, F.cross_entropy(s, y, label_smoothing=0.1))


def test_matches_hand_computation() -> None:
    s = torch.tensor([[1.0, 2.0, 0.5]])
    t = torch.tensor([[0.0, 3.0, 1.0]])
    y = torch.tensor([1])
    T, alpha = 2.0, 0.7

    def softmax(v: list[float]) -> list[float]:
        e = [math.exp(x) for x in v]
        return [x / sum(e) for x in e]

    ce = -math.log(softmax([1.0, 2.0, 0.5])[1])
    p_t = softmax([0.0, 1.5, 0.5])
    p_s = softmax([0.5, 1.0, 0.25])
    kl = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s, strict=True))
    expected = (1 - alpha) * ce + alpha * T * T * kl
    assert math.isclose(distill_loss(s, t, y, T=T, alpha=alpha).item(), expected, rel_tol=1e-5)


def test_teacher_gets_no_gradient() -> None:
    s = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 3, requires_grad=True)
    distill_loss(s, t, torch.tensor([0, 1, 2, 0]), T=3.0, alpha=0.5).backward()
    assert s.grad is not None and t.grad is None
