"""The stateful and special heads beyond the shared checks of ``test_heads.py``: SphereFace's
λ annealing, AdaCos's dynamic scale, CurricularFace's t, AdaFace's norm statistics, MagFace's
regulariser and sub-centre ArcFace's layout, each against a naive recursion or formula.
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from head_references import (
    CURRICULAR_T,
    HEAD_DIR,
    MAGFACE_NORMS,
    C,
    D,
    angle_inputs,
    at_angle,
    build,
    load_weight,
    naive_arcface,
    naive_cos,
    naive_logits,
    naive_magface_margin,
    set_state,
    with_norms,
)
from omegaconf import DictConfig, OmegaConf


def sphereface_cfg() -> DictConfig:
    return OmegaConf.load(HEAD_DIR / "sphereface.yaml")


def test_sphereface_lambda_schedule_and_state() -> None:
    cfg = sphereface_cfg()
    head = build(cfg).double()
    assert "iteration" in head.state_dict()
    x, weight, labels = angle_inputs(delta=1e-3)
    load_weight(head, weight)

    head.train()
    logits = head(x, labels)
    assert int(head.iteration) == 1
    assert head.lambda_().item() == pytest.approx(1000 / 1.12)  # 892.857...
    expected = naive_logits(cfg, x, weight, labels, lam=1000 / 1.12)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-10)

    head.eval()
    head(x, labels)
    head(x, labels)
    assert int(head.iteration) == 1  # eval forwards do not anneal

    head.train()
    head(x, labels)
    assert int(head.iteration) == 2
    assert head.lambda_().item() == pytest.approx(1000 / 1.24)
    head.iteration.fill_(10**4)
    assert head.lambda_().item() == cfg.lambda_min


def test_sphereface_psi_is_continuous_and_monotone() -> None:
    # ψ is the paper's monotone extension of cos(mθ) over [0, π]: check it through the head's
    # target logit with λ = 0 and unit-norm embeddings.
    cfg = OmegaConf.merge(sphereface_cfg(), {"base": 0.0, "lambda_min": 0.0})
    head = build(cfg, num_classes=1, embedding_size=2).double().eval()
    load_weight(head, torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    theta = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
    x = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    psi = head(x, torch.zeros(len(theta), dtype=torch.long))[:, 0]
    assert (psi.diff() < 0).all()
    assert psi[0].item() == pytest.approx(1.0)
    assert psi[-1].item() == pytest.approx(-2 * cfg.m + 1)


def adacos_cfg(dynamic: bool = True) -> DictConfig:
    return OmegaConf.merge(OmegaConf.load(HEAD_DIR / "adacos.yaml"), {"dynamic": dynamic})


def naive_adacos_s(cos: torch.Tensor, labels: torch.Tensor, s: float) -> float:
    rows, ys = cos.tolist(), labels.tolist()
    b_avg = sum(
        sum(math.exp(s * c) for j, c in enumerate(row) if j != y)
        for row, y in zip(rows, ys, strict=True)
    ) / len(rows)
    thetas = sorted(math.acos(row[y]) for row, y in zip(rows, ys, strict=True))
    theta_med = thetas[(len(thetas) - 1) // 2]  # lower median, as torch.median
    return math.log(b_avg) / math.cos(min(math.pi / 4, theta_med))


def test_adacos_dynamic_scale_update() -> None:
    cfg = adacos_cfg()
    head = build(cfg).double()
    # An even batch whose target angles are all below π/4, so θ_med is not hidden by the
    # min(π/4, ·) and the lower median (0.3 here, not the mean 0.35 of the middle pair) shows.
    gen = torch.Generator().manual_seed(6)
    weight = torch.randn(C, D, generator=gen, dtype=torch.float64)
    labels = torch.tensor([3, 1, 4, 1, 5, 2])
    thetas = [0.6, 0.1, 0.5, 0.3, 0.4, 0.2]
    x = torch.stack([at_angle(weight[y], t, gen) for y, t in zip(labels, thetas, strict=True)])
    load_weight(head, weight)
    # Initial value √2·ln(C - 1), stored in the default dtype (float32) at construction; the
    # naive recursion starts from the stored value so the update itself is checked to 1e-10.
    s = head.s.item()
    assert s == pytest.approx(math.sqrt(2) * math.log(C - 1), rel=1e-7)

    head.eval()
    head(x, labels)
    assert head.s.item() == s  # no update in eval mode

    head.train()
    # Then a random batch: in 8-D its target angles cluster near π/2, so θ_med > π/4 and the
    # min(π/4, ·) is exercised.
    x2 = torch.randn(7, D, generator=gen, dtype=torch.float64)
    labels2 = torch.randint(C, (7,), generator=gen)
    for xb, yb in [(x, labels), (x, labels), (x2, labels2)]:
        cos = torch.tensor(
            [[naive_cos(xi, wj) for wj in weight.tolist()] for xi in xb.tolist()],
            dtype=torch.float64,
        )
        s = naive_adacos_s(cos, yb, s)
        if xb is x2:
            angles = [math.acos(row[y]) for row, y in zip(cos.tolist(), yb.tolist(), strict=True)]
            assert sorted(angles)[3] > math.pi / 4
        logits = head(xb, yb)
        assert abs(head.s.item() - s) < 1e-10
        torch.testing.assert_close(logits, s * cos, rtol=0, atol=1e-10)

    fixed = build(adacos_cfg(dynamic=False)).train()
    before = fixed.s.clone()
    fixed(x.float(), labels)
    assert torch.equal(fixed.s, before)


def test_adacos_no_gradient_through_scale() -> None:
    head = build(adacos_cfg()).double().train()
    x, weight, labels = angle_inputs(delta=0.05)
    load_weight(head, weight)
    x.requires_grad_(True)
    head(x, labels).sum().backward()
    assert not head.s.requires_grad

    # The same gradient as a NormFace with s frozen at the value this step used.
    s = head.s.item()
    normface = build(OmegaConf.create({"_target_": "facerec.heads.normface.NormFace", "s": s}))
    normface = normface.double()
    load_weight(normface, weight)
    x2 = x.detach().clone().requires_grad_(True)
    normface(x2, labels).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-12, atol=1e-12)


# --- CurricularFace ---------------------------------------------------------------------------


def curricularface_cfg(**overrides) -> DictConfig:
    return OmegaConf.merge(OmegaConf.load(HEAD_DIR / "curricularface.yaml"), overrides)


def naive_cosines(x: torch.Tensor, weight: torch.Tensor) -> list[list[float]]:
    return [[naive_cos(xi, wj) for wj in weight.tolist()] for xi in x.tolist()]


def test_curricularface_t_update_before_use_train_only() -> None:
    cfg = curricularface_cfg()
    head = build(cfg).double()
    assert "t" in head.state_dict() and head.t.item() == 0.0
    x, weight, labels = angle_inputs(delta=1e-3)
    load_weight(head, weight)
    gen = torch.Generator().manual_seed(8)
    x2 = torch.randn(5, D, generator=gen, dtype=torch.float64)
    labels2 = torch.randint(C, (5,), generator=gen)

    head.eval()
    head(x, labels)
    assert head.t.item() == 0.0  # no update in eval mode

    head.train()
    t = 0.0
    for xb, yb in [(x, labels), (x2, labels2), (x, labels)]:
        cos = naive_cosines(xb, weight)
        mean = statistics.fmean(row[y] for row, y in zip(cos, yb.tolist(), strict=True))
        t = cfg.momentum * mean + (1 - cfg.momentum) * t
        logits = head(xb, yb)
        assert abs(head.t.item() - t) < 1e-12
        # This step's logits already use the t updated from this batch (as the paper's code).
        expected = naive_logits(cfg, xb, weight, yb, t=t)
        torch.testing.assert_close(logits, expected, rtol=0, atol=1e-10)
    assert not head.t.requires_grad

    head.eval()
    head(x2, labels2)
    assert abs(head.t.item() - t) < 1e-12


def test_curricularface_hard_negatives_and_their_gradient() -> None:
    # One sample, θ_y = 1.0, negatives on both sides of cos(θ_y + m) = cos 1.5: the hard one's
    # logit is s·c(t + c), the easy ones' s·c; d logit / d cos = s·(t + 2c) for the hard one.
    # No gradient flows into t (a buffer) nor through the hard/easy switch.
    cfg = curricularface_cfg()
    head = build(cfg, num_classes=4, embedding_size=2).double().eval()
    head.t.fill_(0.4)
    angles = [1.0, 0.8, 1.45, 1.55]  # target, hard (θ < 1.5), hard, easy
    load_weight(
        head, torch.tensor([[math.cos(a), math.sin(a)] for a in angles], dtype=torch.float64)
    )
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    logits = head(x, torch.tensor([0]))[0]
    s, t = cfg.s, 0.4
    c = [math.cos(a) for a in angles]
    expected = [naive_arcface(c[0], s, cfg.m, "th_mm"), s * c[1] * (t + c[1])]
    expected += [s * c[2] * (t + c[2]), s * c[3]]
    torch.testing.assert_close(logits, torch.tensor(expected, dtype=torch.float64))
    # d logit_j / d x for unit x at angle 0 along the tangent e_1 is d logit/d cos · sin(α_j).
    for j, factor in [(1, t + 2 * c[1]), (2, t + 2 * c[2]), (3, 1.0)]:
        (grad,) = torch.autograd.grad(logits[j], x, retain_graph=True)
        assert grad[0, 1].item() == pytest.approx(s * factor * math.sin(angles[j]), rel=1e-9)

    # Past θ_y > π - m the target takes the th_mm fallback (cos θ_y - m·sin m = -1.23 at
    # θ_y = 3), but "hard" still means cos θ_j > cos(θ_y + m) = cos 3.5 = -0.94, as the paper's
    # code: a negative at 2.9 rad (cos = -0.97) lies between the two and stays easy.
    angles = [3.0, -2.9, 0.0, 1.0]
    load_weight(
        head, torch.tensor([[math.cos(a), math.sin(a)] for a in angles], dtype=torch.float64)
    )
    logits = head(x, torch.tensor([0]))[0]
    assert logits[0].item() == pytest.approx(s * (math.cos(3.0) - cfg.m * math.sin(cfg.m)))
    assert logits[1].item() == pytest.approx(s * math.cos(2.9))
    assert logits[2].item() == pytest.approx(s * (t + 1.0))


def test_curricularface_zero_margin_still_reweights_hard_negatives() -> None:
    # m = 0: the target is cos θ_y, as NormFace, but negatives closer than the target
    # (cos θ_j > cos θ_y) are still multiplied by (t + cos θ_j): CurricularFace does NOT reduce
    # to NormFace. Rows without such a negative match NormFace exactly.
    cfg = curricularface_cfg(m=0.0)
    head = build(cfg).double().eval()
    set_state(head)
    normface = build(OmegaConf.create({"_target_": "facerec.heads.normface.NormFace", "s": cfg.s}))
    normface = normface.double()
    x, weight, labels = angle_inputs(delta=1e-3)
    load_weight(head, weight)
    load_weight(normface, weight)
    logits, plain = head(x, labels), normface(x, labels)
    cos = plain / cfg.s
    hard = cos > cos.gather(1, labels[:, None])
    assert hard.any() and (~hard.any(dim=1)).any()
    easy_rows = ~hard.any(dim=1)
    torch.testing.assert_close(logits[easy_rows], plain[easy_rows], rtol=0, atol=1e-12)
    torch.testing.assert_close(logits[hard], cfg.s * cos[hard] * (CURRICULAR_T + cos[hard]))


# --- AdaFace ----------------------------------------------------------------------------------


def adaface_cfg(**overrides) -> DictConfig:
    return OmegaConf.merge(OmegaConf.load(HEAD_DIR / "adaface.yaml"), overrides)


def test_adaface_statistics_update_before_use_train_only() -> None:
    cfg = adaface_cfg()
    head = build(cfg).double()
    state = head.state_dict()
    assert state["batch_mean"].item() == 20.0 and state["batch_std"].item() == 100.0
    x, weight, labels = angle_inputs(delta=1e-3)
    load_weight(head, weight)
    gen = torch.Generator().manual_seed(9)
    # Norms spread from 0 (clipped to 0.001) to above 100 (clipped to 100).
    x2 = torch.randn(6, D, generator=gen, dtype=torch.float64)
    x2 = x2 * torch.tensor([0.0, 0.5, 3.0, 20.0, 80.0, 400.0], dtype=torch.float64)[:, None]
    labels2 = torch.randint(C, (6,), generator=gen)

    head.eval()
    head(x, labels)
    assert head.batch_mean.item() == 20.0 and head.batch_std.item() == 100.0

    head.train()
    mean, std = 20.0, 100.0
    for xb, yb in [(x, labels), (x2, labels2), (x, labels)]:
        norms = [min(100.0, max(1e-3, math.sqrt(sum(v * v for v in row)))) for row in xb.tolist()]
        mean = cfg.momentum * statistics.fmean(norms) + (1 - cfg.momentum) * mean
        std = cfg.momentum * statistics.stdev(norms) + (1 - cfg.momentum) * std  # unbiased
        logits = head(xb, yb)
        assert abs(head.batch_mean.item() - mean) < 1e-12
        assert abs(head.batch_std.item() - std) < 1e-12
        expected = naive_logits(cfg, xb, weight, yb, stats=(mean, std))
        torch.testing.assert_close(logits, expected, rtol=0, atol=1e-10)

    # A batch of one sample has no (unbiased) standard deviation: only the mean moves.
    norm = min(100.0, x[2].norm().item())
    head(x[2:3], labels[2:3])
    assert abs(head.batch_mean.item() - (cfg.momentum * norm + (1 - cfg.momentum) * mean)) < 1e-12
    assert abs(head.batch_std.item() - std) < 1e-12


def test_adaface_margin_extremes_and_no_gradient_through_the_norm() -> None:
    # The three regimes: g = -1 (low norm) cos(θ + m), ArcFace's margin;
    # g = 0, cos θ - m, CosFace's; g = 1 (high norm) cos(θ - m) - 2m. The norm is detached, so
    # the gradient w.r.t. x is orthogonal to x (only the direction is trained), as NormFace.
    cfg = adaface_cfg()
    head = build(cfg, num_classes=2, embedding_size=2).double().eval()
    head.batch_mean.fill_(10.0)
    head.batch_std.fill_(1.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    theta = 1.0
    norms = [1.0, 10.0, 20.0]  # g = -1 (clipped), 0, +1 (clipped)
    x = torch.tensor([[n * math.cos(theta), n * math.sin(theta)] for n in norms])
    x = x.double().requires_grad_(True)
    logits = head(x, torch.zeros(3, dtype=torch.long))
    m, s = cfg.m, cfg.s
    expected = [
        s * math.cos(theta + m),
        s * (math.cos(theta) - m),
        s * (math.cos(theta - m) - 2 * m),
    ]
    torch.testing.assert_close(logits[:, 0], torch.tensor(expected, dtype=torch.float64))
    logits[:, 0].sum().backward()
    radial = (x.grad * x.detach()).sum(dim=1)
    torch.testing.assert_close(radial, torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12)


# --- MagFace ----------------------------------------------------------------------------------


def magface_cfg(**overrides) -> DictConfig:
    return OmegaConf.merge(OmegaConf.load(HEAD_DIR / "magface.yaml"), overrides)


def test_magface_regularizer_value_and_gradient() -> None:
    cfg = magface_cfg()
    head = build(cfg).double()
    gen = torch.Generator().manual_seed(10)
    x = torch.randn(len(MAGFACE_NORMS) + 1, D, generator=gen, dtype=torch.float64)
    x = with_norms(cfg, x)
    x[-1] = 0.0  # zero embedding: a clipped to l_a, finite value and gradient
    x.requires_grad_(True)
    regularizer = head.regularizer(x)
    assert regularizer.shape == () and regularizer.dtype == torch.float64

    norms = [math.sqrt(sum(v * v for v in row)) for row in x.tolist()]
    clipped = [min(cfg.u_a, max(cfg.l_a, a)) for a in norms]
    expected = cfg.lambda_g * statistics.fmean(1 / a + a / cfg.u_a**2 for a in clipped)
    assert abs(regularizer.item() - expected) < 1e-12

    # d/dx of λ·mean(g(a)) = λ/B · g'(a) · x/‖x‖ inside [l_a, u_a], 0 outside (clipped).
    regularizer.backward()
    assert torch.isfinite(x.grad).all()
    for row, grad, a in zip(x.detach(), x.grad, norms, strict=True):
        inside = cfg.l_a < a < cfg.u_a
        slope = cfg.lambda_g / len(norms) * (-1 / a**2 + 1 / cfg.u_a**2) if inside else 0.0
        expected_grad = slope * row / a if a > 0 else torch.zeros_like(row)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-15)

    y = (20.0 * torch.randn(3, 4, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(head.regularizer, (y,), eps=1e-6, atol=1e-8)

    # float32 out of a float32 (or bf16, under autocast) call; the same in eval mode.
    head = build(cfg).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = head.regularizer(x.detach().float().bfloat16())
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(expected, rel=1e-2)  # bf16 inputs: 3 digits


def test_magface_gradient_flows_through_the_magnitude() -> None:
    # Unlike AdaFace, the margin m(a) is differentiated: a larger norm means a larger margin, a
    # lower target logit, so the cross-entropy pushes the norm down (the regulariser pushes it
    # up). With θ and the other logits fixed, d target / d a = -s·sin(θ + m)·m'(a).
    cfg = magface_cfg()
    head = build(cfg, num_classes=2, embedding_size=2).double().eval()
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    theta, a = 0.7, 50.0
    x = torch.tensor([[a * math.cos(theta), a * math.sin(theta)]], dtype=torch.float64)
    x.requires_grad_(True)
    target = head(x, torch.tensor([0]))[0, 0]
    (grad,) = torch.autograd.grad(target, x)
    radial = (grad[0] * x[0].detach() / a).sum().item()
    slope = (cfg.u_m - cfg.l_m) / (cfg.u_a - cfg.l_a)
    m = naive_magface_margin(a, cfg)
    assert radial == pytest.approx(-cfg.s * math.sin(theta + m) * slope, rel=1e-9)


# --- Sub-center ArcFace -----------------------------------------------------------------------


def subcenter_cfg(**overrides) -> DictConfig:
    return OmegaConf.merge(OmegaConf.load(HEAD_DIR / "subcenter_arcface.yaml"), overrides)


def test_subcenter_k1_is_arcface_and_layout_is_class_major() -> None:
    x, weight, labels = angle_inputs(delta=1e-3)
    arcface = build(OmegaConf.load(HEAD_DIR / "arcface.yaml")).double()
    single = build(subcenter_cfg(k=1)).double()
    load_weight(arcface, weight)
    load_weight(single, weight)
    torch.testing.assert_close(single(x, labels), arcface(x, labels), rtol=0, atol=0)

    # k = 3: rows c·3 ... c·3 + 2 belong to class c. An embedding 0.1 rad from row 3·5 + 2
    # (the third sub-centre of class 5), all rows random: class 5's cosine is cos 0.1.
    head = build(subcenter_cfg()).double()
    assert head.weight.shape == (C * 3, D)
    assert head.sub_centers().shape == (C, 3, D)
    assert head.sub_centers().data_ptr() == head.weight.data_ptr()  # a view, not a copy
    gen = torch.Generator().manual_seed(12)
    load_weight(head, torch.randn(3 * C, D, generator=gen, dtype=torch.float64))
    x = at_angle(head.weight.detach()[3 * 5 + 2], 0.1, gen)[None]
    logits = head(x, torch.tensor([1]))
    assert logits[0, 5].item() == pytest.approx(head.s * math.cos(0.1), rel=1e-12)
    # The max passes the gradient to the winning sub-centre only.
    logits[0, 5].backward()
    grad = head.weight.grad.view(C, 3, D)
    assert grad[5, 2].abs().sum() > 0
    assert grad[5, :2].abs().sum() == 0
