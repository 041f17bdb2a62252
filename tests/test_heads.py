"""Tests of the classification heads against the papers' formulas.

Every head is discovered from ``configs/head/*.yaml`` and built the way the trainer builds it,
``instantiate(cfg, embedding_size=D, num_classes=C)``. The reference for each head is a naive
per-sample loop over Python floats (``math.acos``/``math.cos``) written here from the paper,
independent of the helpers in ``facerec.heads``.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.func import functional_call

from facerec.heads.base import safe_acos, sin_from_cos

HEAD_DIR = Path(__file__).resolve().parents[1] / "configs" / "head"
HEAD_FILES = sorted(HEAD_DIR.glob("*.yaml"))

D, C = 8, 9

# Extra settings checked besides each YAML's defaults: every ArcFace fallback, SphereFace with
# λ = 0 (pure A-Softmax, the ψ branches fully visible) and m = 3 (odd), the combined margin
# with a multiplicative m1 (the acos path) and an additive m3.
VARIANTS: dict[str, list[dict]] = {
    "ArcFace": [{"fallback": "th_mm"}, {"fallback": "easy_margin"}, {"fallback": "none"}],
    "SphereFace": [{}, {"base": 0.0, "lambda_min": 0.0}, {"m": 3, "base": 0.0, "lambda_min": 0.0}],
    "CombinedMargin": [{}, {"m1": 1.35, "m2": 0.2, "m3": 0.15}],
    "AdaCos": [{"dynamic": True}, {"dynamic": False}],
}


def class_name(cfg: DictConfig) -> str:
    return cfg._target_.rsplit(".", 1)[-1]


def head_configs() -> list[tuple[str, DictConfig]]:
    """(test id, config) for every YAML and its extra variants."""
    cases = []
    for path in HEAD_FILES:
        cfg = OmegaConf.load(path)
        for overrides in VARIANTS.get(class_name(cfg), [{}]):
            suffix = ",".join(f"{k}={v}" for k, v in overrides.items())
            cases.append(
                (f"{path.stem}[{suffix}]" if suffix else path.stem, OmegaConf.merge(cfg, overrides))
            )
    return cases


CASES = head_configs()
CASE_IDS = [case_id for case_id, _ in CASES]
CFGS = [cfg for _, cfg in CASES]


def build(cfg: DictConfig, num_classes: int = C, embedding_size: int = D) -> torch.nn.Module:
    return instantiate(cfg, embedding_size=embedding_size, num_classes=num_classes)


def set_lambda_min(head: torch.nn.Module) -> None:
    """Put SphereFace far into its annealing so the margin is not hidden behind λ ≈ 1000."""
    if hasattr(head, "iteration"):
        head.iteration.fill_(10**6)


# --- naive references ----------------------------------------------------------------------


def naive_cos(x: list[float], w: list[float]) -> float:
    nx = max(math.sqrt(sum(v * v for v in x)), 1e-12)
    nw = max(math.sqrt(sum(v * v for v in w)), 1e-12)
    c = sum(a * b for a, b in zip(x, w, strict=True)) / (nx * nw)
    return min(1.0, max(-1.0, c))


def naive_sphereface_psi(theta: float, m: int) -> float:
    k = min(math.floor(m * theta / math.pi), m - 1)
    return (-1) ** k * math.cos(m * theta) - 2 * k


def naive_arcface(c: float, s: float, m: float, fallback: str) -> float:
    theta = math.acos(c)
    if fallback == "th_mm" and theta > math.pi - m:
        return s * (c - m * math.sin(m))
    if fallback == "easy_margin" and c <= 0:
        return s * c
    return s * math.cos(theta + m)


def naive_logits(
    cfg: DictConfig,
    x: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    lam: float | None = None,
    s: float | None = None,
) -> torch.Tensor:
    """Logits from the paper's formula, one sample and one class at a time.

    Args:
        cfg: Head config (its hyper-parameters are read from here, not from the module).
        x: Embeddings (B, D).
        weight: Class centres (C, D).
        labels: (B,).
        bias: Softmax bias (C,).
        lam: SphereFace's λ.
        s: AdaCos's scale.

    Returns:
        (B, C) float64.
    """
    name = class_name(cfg)
    xs, ws, ys = x.double().tolist(), weight.double().tolist(), labels.tolist()
    out = []
    for xi, yi in zip(xs, ys, strict=True):
        row = []
        norm = math.sqrt(sum(v * v for v in xi))
        for j, wj in enumerate(ws):
            if name == "Softmax":
                row.append(sum(a * b for a, b in zip(xi, wj, strict=True)) + float(bias[j]))
                continue
            c = naive_cos(xi, wj)
            theta = math.acos(c)
            target = j == yi
            if name == "NormFace":
                row.append(cfg.s * c)
            elif name == "AdaCos":
                row.append(s * c)
            elif name == "CosFace":
                row.append(cfg.s * (c - cfg.m) if target else cfg.s * c)
            elif name == "ArcFace":
                row.append(naive_arcface(c, cfg.s, cfg.m, cfg.fallback) if target else cfg.s * c)
            elif name == "CombinedMargin":
                value = math.cos(cfg.m1 * theta + cfg.m2) - cfg.m3 if target else c
                row.append(cfg.s * value)
            elif name == "AirFace":
                angle = theta + cfg.m if target else theta
                row.append(cfg.s * (math.pi - 2 * angle) / math.pi)
            elif name == "SphereFace":
                if target:
                    psi = naive_sphereface_psi(theta, cfg.m)
                    row.append((lam * norm * c + norm * psi) / (1 + lam))
                else:
                    row.append(norm * c)
            else:
                raise AssertionError(f"no naive reference for {name}")
        out.append(row)
    return torch.tensor(out, dtype=torch.float64)


def naive_lambda(cfg: DictConfig, iteration: int) -> float:
    return max(cfg.lambda_min, cfg.base * (1 + cfg.gamma * iteration) ** (-cfg.power))


def reference_for(cfg: DictConfig, head: torch.nn.Module, x, labels) -> torch.Tensor:
    """Naive logits with the head's current weights and state (λ recomputed from the
    iteration counter, AdaCos's initial s checked against √2·ln(C - 1))."""
    name = class_name(cfg)
    kwargs = {}
    if name == "Softmax":
        kwargs["bias"] = head.bias.detach()
    if name == "SphereFace":
        kwargs["lam"] = naive_lambda(cfg, int(head.iteration))
    if name == "AdaCos":
        # The buffer holds √2·ln(C - 1) rounded to float32 at construction (it is created in
        # the default dtype); the logits are checked against the value it actually holds.
        assert head.s.item() == pytest.approx(math.sqrt(2) * math.log(C - 1), rel=1e-7)
        kwargs["s"] = head.s.item()
    return naive_logits(cfg, x, head.weight.detach(), labels, **kwargs)


# --- inputs ---------------------------------------------------------------------------------


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def at_angle(centre: torch.Tensor, theta: float, gen: torch.Generator) -> torch.Tensor:
    """A vector at angle θ from ``centre`` (float64), with a random norm."""
    c = unit(centre)
    u = torch.randn(c.shape, generator=gen, dtype=torch.float64)
    u = unit(u - (u @ c) * c)
    return (math.cos(theta) * c + math.sin(theta) * u) * (0.5 + 2 * torch.rand((), generator=gen))


def angle_inputs(delta: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embeddings, centres and labels (float64) covering θ = 0 and π exactly, θ = δ and π - δ,
    each SphereFace branch k and ArcFace's fallback regions, plus generic random rows.

    θ = 0/π exactly use axis-aligned centres and embeddings (±2.5·e_k against 3·e_k): their
    normalisation and dot product are exact in every float format, so cos θ = ±1 exactly in
    the head *and* in the reference (two differently rounded 1 - 1e-16 would differ by
    sqrt(1e-16) after sin/acos, which is conditioning, not a bug).
    """
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(C, D, generator=gen, dtype=torch.float64)
    weight[0] = 0.0
    weight[0, 0] = 3.0
    weight[1] = 0.0
    weight[1, 1] = 0.7
    rows = [2.5 * torch.eye(D, dtype=torch.float64)[0], -1.5 * torch.eye(D, dtype=torch.float64)[1]]
    labels = [0, 1]
    thetas = [delta, math.pi - delta, 0.5, 1.0, 2.0, 2.5, 2.9, math.pi - 0.3]
    for i, theta in enumerate(thetas):
        label = 2 + i % (C - 2)
        rows.append(at_angle(weight[label], theta, gen))
        labels.append(label)
    for _ in range(4):
        rows.append(torch.randn(D, generator=gen, dtype=torch.float64))
        labels.append(int(torch.randint(C, (), generator=gen)))
    return torch.stack(rows), weight, torch.tensor(labels)


def load_weight(head: torch.nn.Module, weight: torch.Tensor) -> None:
    with torch.no_grad():
        head.weight.copy_(weight)


# --- tests ----------------------------------------------------------------------------------


def test_every_head_has_a_config() -> None:
    expected = {"softmax", "normface", "sphereface", "cosface", "amsoftmax", "arcface", "adacos"}
    expected |= {"airface", "combined"}
    assert expected <= {path.stem for path in HEAD_FILES}


@pytest.mark.parametrize("cfg", CFGS, ids=CASE_IDS)
def test_shapes_finite_and_every_parameter_gets_a_gradient(cfg: DictConfig) -> None:
    torch.manual_seed(0)
    head = build(cfg)
    assert head.weight.shape == (C, D)
    assert hasattr(head, "bias") == (class_name(cfg) == "Softmax")
    x = torch.randn(5, D, requires_grad=True)
    labels = torch.randint(C, (5,))
    logits = head(x, labels)
    assert logits.shape == (5, C)
    assert logits.dtype == torch.float32
    F.cross_entropy(logits, labels).backward()
    assert torch.isfinite(logits).all()
    assert torch.isfinite(x.grad).all()
    for name, param in head.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    head.eval()
    assert head(x, labels).shape == (5, C)


@pytest.mark.parametrize("cfg", CFGS, ids=CASE_IDS)
def test_matches_naive_loop_float64(cfg: DictConfig) -> None:
    x, weight, labels = angle_inputs(delta=1e-3)
    head = build(cfg).double().eval()
    load_weight(head, weight)
    set_lambda_min(head)
    expected = reference_for(cfg, head, x, labels)
    torch.testing.assert_close(head(x, labels), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("cfg", CFGS, ids=CASE_IDS)
def test_matches_naive_loop_float32(cfg: DictConfig) -> None:
    # θ = 0/π exactly are still included; "near" is 0.05 rad here because float32 resolves cos
    # only to ~6e-8 near ±1, i.e. θ only to sqrt(2·6e-8) ≈ 3.5e-4 rad whatever the code does:
    # at θ = 1e-3 that is up to 1e-4 relative error in the ArcFace/AirFace logits (measured),
    # at θ = 0.05 about 2e-7. A conditioning limit of float32, not of the implementation.
    x, weight, labels = angle_inputs(delta=0.05)
    x, weight = x.float(), weight.float()
    head = build(cfg).eval()
    load_weight(head, weight)
    set_lambda_min(head)
    expected = reference_for(cfg, head, x, labels)  # float64 maths on the float32 inputs
    logits = head(x, labels)
    assert logits.dtype == torch.float32
    scale = expected.abs().max().item()
    torch.testing.assert_close(logits.double(), expected, rtol=1e-5, atol=1e-5 * scale)


MARGIN_ZERO = {
    "CosFace": [{"m": 0.0}],
    "ArcFace": [{"m": 0.0, "fallback": f} for f in ("th_mm", "easy_margin", "none")],
    "CombinedMargin": [{"m1": 1.0, "m2": 0.0, "m3": 0.0}],
}
ZERO_CASES = [
    (f"{path.stem}-{','.join(f'{k}={v}' for k, v in o.items())}", path, o)
    for path in HEAD_FILES
    for o in MARGIN_ZERO.get(class_name(OmegaConf.load(path)), [])
]


@pytest.mark.parametrize(
    ("path", "overrides"), [c[1:] for c in ZERO_CASES], ids=[c[0] for c in ZERO_CASES]
)
def test_zero_margin_is_normface(path: Path, overrides: dict) -> None:
    cfg = OmegaConf.merge(OmegaConf.load(path), overrides)
    head = build(cfg).double()
    normface = build(OmegaConf.create({"_target_": "facerec.heads.normface.NormFace", "s": cfg.s}))
    normface = normface.double()
    normface.load_state_dict(head.state_dict())
    x, _, labels = angle_inputs(delta=1e-3)
    torch.testing.assert_close(head(x, labels), normface(x, labels), rtol=0, atol=1e-12)


@pytest.mark.parametrize("cfg", CFGS, ids=CASE_IDS)
def test_gradcheck_float64(cfg: DictConfig) -> None:
    # Generic random inputs: the kinks (ArcFace's fallback switch, SphereFace's k) and the
    # poles cos = ±1 are almost surely not within the finite-difference step.
    torch.manual_seed(1)
    head = build(cfg, num_classes=5, embedding_size=4).double().eval()
    set_lambda_min(head)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 3, 4])
    names = [name for name, _ in head.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in head.named_parameters())

    def fn(x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return functional_call(head, dict(zip(names, params, strict=True)), (x, labels))

    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-5)


def pathological_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embeddings at cos = +1 and -1 exactly (axis-aligned, so exactly ±1 *before* the clamp,
    whose zero gradient outside [-1, 1] would otherwise hide an infinite derivative), as target
    and as non-target class; ± a random bf16 centre; duplicate embeddings with the same and
    with different labels; zero embeddings."""
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(C, D, generator=gen).bfloat16().float()
    eye = torch.eye(D)
    weight[0], weight[1] = 3.0 * eye[0], 0.5 * eye[1]
    x = torch.stack(
        [
            2.0 * eye[0],
            -2.0 * eye[1],
            2.0 * eye[0],
            -eye[1],
            weight[2],
            -weight[3],
            weight[4],
            weight[4],
            weight[4],
            torch.zeros(D),
            torch.zeros(D),
        ]
    )
    labels = torch.tensor([0, 1, 5, 6, 2, 3, 4, 4, 7, 5, 8])
    return x.bfloat16(), weight, labels


@pytest.mark.parametrize("cfg", CFGS, ids=CASE_IDS)
def test_bf16_autocast_finite_at_poles_duplicates_and_zeros(cfg: DictConfig) -> None:
    x, weight, labels = pathological_inputs()
    head = build(cfg).train()
    load_weight(head, weight)
    set_lambda_min(head)
    x.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(x, labels)
        loss = F.cross_entropy(logits, labels)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    loss.backward()
    assert torch.isfinite(x.grad).all()
    assert torch.isfinite(head.weight.grad).all()
    for buffer in head.buffers():
        assert torch.isfinite(buffer.double()).all()


@pytest.mark.parametrize("cfg", CFGS, ids=CASE_IDS)
def test_embeddings_on_their_centres_float32(cfg: DictConfig) -> None:
    # Embeddings that are positive multiples of their own random centre: θ = 0 mathematically,
    # but the float32 cosine rounds to 1 ± a few ulp, some of them above 1, which must be
    # clamped before acos / sqrt(1 - cos²). Classes 2k and 2k + 1 share a direction so this
    # happens in non-target columns too. Tolerance: sqrt(2·1e-7) of angle error.
    gen = torch.Generator().manual_seed(7)
    num_classes, dim = 64, 96
    head = build(cfg, num_classes=num_classes, embedding_size=dim).train()
    set_lambda_min(head)
    with torch.no_grad():
        head.weight[1::2] = 3.0 * head.weight[0::2]
    labels = torch.arange(num_classes).repeat(2)
    x = head.weight.detach()[labels] * (0.1 + 5 * torch.rand(len(labels), 1, generator=gen))
    x.requires_grad_(True)
    logits = head(x, labels)
    F.cross_entropy(logits, labels).backward()
    assert torch.isfinite(logits).all()
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()
    if class_name(cfg) == "AdaCos":
        return  # its s has moved by this train step; covered by the naive checks elsewhere
    kwargs = {"bias": head.bias.detach()} if class_name(cfg) == "Softmax" else {}
    if class_name(cfg) == "SphereFace":
        kwargs["lam"] = naive_lambda(cfg, int(head.iteration))
    expected = naive_logits(cfg, x.detach(), head.weight.detach(), labels, **kwargs)
    scale = expected.abs().max().item()
    torch.testing.assert_close(logits.double(), expected, rtol=0, atol=2e-3 * scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sin_and_acos_helpers_exact_with_finite_gradient_at_poles(dtype: torch.dtype) -> None:
    # The heads clamp cos to [-1, 1] first and, in current PyTorch, clamp passes no gradient at
    # the bounds, which would hide an infinite derivative there; so test the helpers directly.
    values = [-1.0, -0.6, 0.0, 0.8, 1.0]
    c = torch.tensor(values, dtype=dtype, requires_grad=True)
    sin, theta = sin_from_cos(c), safe_acos(c)
    torch.testing.assert_close(
        sin.double(),
        torch.tensor([math.sqrt(1 - v * v) for v in values], dtype=torch.float64),
        rtol=0,
        atol=1e-7,
    )
    torch.testing.assert_close(
        theta.double(),
        torch.tensor([math.acos(v) for v in values], dtype=torch.float64),
        rtol=0,
        atol=1e-7,
    )
    assert sin[0] == 0 and sin[-1] == 0 and theta[-1] == 0 and theta[0] == math.pi
    (grad_sin,) = torch.autograd.grad(sin.sum(), c)
    (grad_theta,) = torch.autograd.grad(theta.sum(), c)
    assert torch.isfinite(grad_sin).all() and torch.isfinite(grad_theta).all()
    interior = [1, 2, 3]
    expected_sin = torch.tensor([-v / math.sqrt(1 - v * v) for v in values[1:4]], dtype=dtype)
    expected_theta = torch.tensor([-1 / math.sqrt(1 - v * v) for v in values[1:4]], dtype=dtype)
    torch.testing.assert_close(grad_sin[interior], expected_sin)
    torch.testing.assert_close(grad_theta[interior], expected_theta)


def test_margin_runs_in_float32_under_autocast() -> None:
    # A bf16 cosine would round cos(0.05) = 0.99875 to 1.0 (bf16 spacing below 1 is 2^-8), so
    # ArcFace's target logit would be s·cos m instead of s·cos(0.05 + m).
    cfg = OmegaConf.load(HEAD_DIR / "arcface.yaml")
    head = build(cfg)
    x, weight, labels = angle_inputs(delta=0.05)
    load_weight(head, weight.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(x.float(), labels)
    expected = reference_for(cfg, head, x.float(), labels)
    torch.testing.assert_close(logits.double(), expected, rtol=1e-5, atol=1e-5 * 64)


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


@pytest.mark.parametrize("cfg", CFGS, ids=CASE_IDS)
def test_state_dict_round_trip_resumes_exactly(cfg: DictConfig) -> None:
    torch.manual_seed(4)
    head = build(cfg).train()
    batches = [(torch.randn(6, D), torch.randint(C, (6,))) for _ in range(4)]
    for x, labels in batches[:3]:
        head(x, labels)
    state = copy.deepcopy(head.state_dict())
    if class_name(cfg) == "SphereFace":
        assert int(state["iteration"]) == 3
    if class_name(cfg) == "AdaCos":
        assert "s" in state

    torch.manual_seed(5)
    resumed = build(cfg).train()
    resumed.load_state_dict(state)
    x, labels = batches[3]
    assert torch.equal(head(x, labels), resumed(x, labels))
    assert all(torch.equal(a, b) for a, b in zip(head.buffers(), resumed.buffers(), strict=True))


@pytest.mark.parametrize("path", HEAD_FILES, ids=[p.stem for p in HEAD_FILES])
def test_yaml_holds_only_target_and_hyperparameters(path: Path) -> None:
    cfg = OmegaConf.load(path)
    head = build(cfg)
    for key, value in cfg.items():
        if key == "_target_":
            continue
        assert getattr(head, key) == value, key
    # The CLI spelling ``head.s=32 head.m=0.4`` reaches the constructor.
    # (SphereFace's m is an integer multiplier.)
    new_values = {"s": 32.0, "m": 3 if isinstance(cfg.get("m"), int) else 0.4}
    overrides = [f"{k}={v}" for k, v in new_values.items() if k in cfg]
    head = build(OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides)))
    for key in ("s", "m"):
        if key in cfg:
            assert getattr(head, key) == new_values[key]


@pytest.mark.parametrize(
    ("target", "kwargs"),
    [
        ("facerec.heads.arcface.ArcFace", {"fallback": "clip"}),
        ("facerec.heads.sphereface.SphereFace", {"m": 2.5}),
        ("facerec.heads.adacos.AdaCos", {}),
    ],
)
def test_invalid_arguments_raise(target: str, kwargs: dict) -> None:
    cfg = OmegaConf.create({"_target_": target, **kwargs})
    with pytest.raises(Exception, match=r"must|needs"):
        build(cfg, num_classes=2)
