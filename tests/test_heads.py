"""Tests of the classification heads against the papers' formulas.

Every head is discovered from ``configs/head/*.yaml`` and built the way the trainer builds it,
``instantiate(cfg, embedding_size=D, num_classes=C)``. The reference for each head is a naive
per-sample function of Python floats (``math.acos``/``math.cos``) written from the paper in
``head_references.py``,
independent of the helpers in ``facerec.heads``: one per head class, registered with
``@reference(<class name>)`` in ``REFERENCES``, so a new head is its module, its YAML and its
reference (a YAML without one fails ``test_every_head_config_has_a_reference``).

Stateful heads (SphereFace's λ, AdaCos's s, CurricularFace's t, AdaFace's norm statistics) are
checked with their state read from the head's buffers, and their updates against naive
recursions in ``test_head_state.py``.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from head_references import (
    CASE_IDS,
    CFGS,
    HEAD_DIR,
    HEAD_FILES,
    REFERENCES,
    C,
    D,
    angle_inputs,
    build,
    class_centres,
    class_name,
    load_weight,
    naive_logits,
    reference_for,
    set_state,
    state_kwargs,
    sub_centres_per_class,
    with_norms,
)
from omegaconf import DictConfig, OmegaConf
from torch.func import functional_call

from facerec.heads.functional import normalized_linear, safe_acos, sin_from_cos


def test_every_head_has_a_config() -> None:
    expected = {"softmax", "normface", "sphereface", "cosface", "amsoftmax", "arcface", "adacos"}
    expected |= {"airface", "combined", "curricularface", "adaface", "magface", "subcenter_arcface"}
    assert expected <= {path.stem for path in HEAD_FILES}


@pytest.mark.parametrize("path", HEAD_FILES, ids=[p.stem for p in HEAD_FILES])
def test_every_head_config_has_a_reference(path: Path) -> None:
    cfg = OmegaConf.load(path)
    name = class_name(cfg)
    assert name in REFERENCES, (
        f"{path.name}: no naive reference for {name}; add one with @reference({name!r})"
    )


def test_every_reference_has_a_config() -> None:
    names = {class_name(OmegaConf.load(path)) for path in HEAD_FILES}
    assert set(REFERENCES) <= names, sorted(set(REFERENCES) - names)


@pytest.mark.parametrize("cfg", CFGS, ids=CASE_IDS)
def test_shapes_finite_and_every_parameter_gets_a_gradient(cfg: DictConfig) -> None:
    torch.manual_seed(0)
    head = build(cfg)
    assert head.weight.shape == (C * sub_centres_per_class(cfg), D)
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
    x = with_norms(cfg, x)
    head = build(cfg).double().eval()
    load_weight(head, weight)
    set_state(head)
    expected = reference_for(cfg, head, x, labels)
    torch.testing.assert_close(head(x, labels), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("cfg", CFGS, ids=CASE_IDS)
def test_matches_naive_loop_float32(cfg: DictConfig) -> None:
    # θ = 0/π exactly are still included; "near" is 0.05 rad here because float32 resolves cos
    # only to ~6e-8 near ±1, i.e. θ only to sqrt(2·6e-8) ≈ 3.5e-4 rad whatever the code does:
    # at θ = 1e-3 that is up to 1e-4 relative error in the ArcFace/AirFace logits (measured),
    # at θ = 0.05 about 2e-7. A conditioning limit of float32, not of the implementation.
    x, weight, labels = angle_inputs(delta=0.05)
    x, weight = with_norms(cfg, x).float(), weight.float()
    head = build(cfg).eval()
    load_weight(head, weight)
    set_state(head)
    expected = reference_for(cfg, head, x, labels)  # float64 maths on the float32 inputs
    logits = head(x, labels)
    assert logits.dtype == torch.float32
    scale = expected.abs().max().item()
    torch.testing.assert_close(logits.double(), expected, rtol=1e-5, atol=1e-5 * scale)


# Zero margin gives NormFace for these. AdaFace's does too, except that its angle is clipped to
# [ε, π - ε] (ε = 1e-3): at θ = 0/π exactly its target is ±s·cos ε, within s·(1 - cos ε) of
# NormFace. CurricularFace's does not: negatives harder than the target are still reweighted by
# (t + cos θ_j) (test_curricularface_zero_margin_still_reweights_hard_negatives). Sub-centre
# ArcFace's does only with k = 1 (otherwise the max over sub-centres remains).
MARGIN_ZERO = {
    "CosFace": [{"m": 0.0}],
    "ArcFace": [{"m": 0.0, "fallback": f} for f in ("th_mm", "easy_margin", "none")],
    "CombinedMargin": [{"m1": 1.0, "m2": 0.0, "m3": 0.0}],
    "AdaFace": [{"m": 0.0}],
    "MagFace": [{"l_m": 0.0, "u_m": 0.0, "fallback": f} for f in ("th_mm", "easy_margin", "none")],
    "SubcenterArcFace": [{"m": 0.0, "k": 1}],
}
ZERO_MARGIN_ATOL = {"AdaFace": 64.0 * (1.0 - math.cos(1e-3))}
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
    load_weight(normface, head.weight.detach())
    x, _, labels = angle_inputs(delta=1e-3)
    x = with_norms(cfg, x)
    atol = ZERO_MARGIN_ATOL.get(class_name(cfg), 0.0) + 1e-12
    torch.testing.assert_close(head(x, labels), normface(x, labels), rtol=0, atol=atol)


@pytest.mark.parametrize("cfg", CFGS, ids=CASE_IDS)
def test_gradcheck_float64(cfg: DictConfig) -> None:
    # Generic random inputs: the kinks (ArcFace's fallback switch, SphereFace's k) and the
    # poles cos = ±1 are almost surely not within the finite-difference step.
    # MagFace's inputs have norms inside [l_a, u_a], so the gradient through the margin m(a) is
    # checked too. AdaFace detaches the norm by design (a finite difference would see it):
    # its inputs are mapped onto fixed norms, so only the direction varies.
    torch.manual_seed(1)
    head = build(cfg, num_classes=5, embedding_size=4).double().eval()
    set_state(head)
    scale = 20.0 if class_name(cfg) == "MagFace" else 1.0
    x = (scale * torch.randn(3, 4, dtype=torch.float64)).requires_grad_(True)
    labels = torch.tensor([0, 3, 4])
    names = [name for name, _ in head.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in head.named_parameters())
    norms = x.detach().norm(dim=1, keepdim=True)

    def fn(x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        if class_name(cfg) == "AdaFace":
            x = x / x.norm(dim=1, keepdim=True) * norms
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
    if class_name(cfg) == "MagFace":
        x = x * 32.0  # norms inside [l_a, u_a], so the gradient goes through m(a); exact in bf16
    head = build(cfg).train()
    load_weight(head, weight)
    set_state(head)
    x.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(x, labels)
        loss = F.cross_entropy(logits, labels)
        if hasattr(head, "regularizer"):
            regularizer = head.regularizer(x)
            assert regularizer.dtype == torch.float32 and torch.isfinite(regularizer)
            loss = loss + regularizer
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
    set_state(head)
    centres = class_centres(head)  # sub-centre ArcFace: the first sub-centre of each class
    with torch.no_grad():
        centres[1::2] = 3.0 * centres[0::2]
    labels = torch.arange(num_classes).repeat(2)
    x = centres.detach()[labels] * (0.1 + 5 * torch.rand(len(labels), 1, generator=gen))
    x.requires_grad_(True)
    logits = head(x, labels)
    F.cross_entropy(logits, labels).backward()
    assert torch.isfinite(logits).all()
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()
    if class_name(cfg) == "AdaCos":
        return  # its s has moved by this train step; covered by the naive checks elsewhere
    # CurricularFace's t and AdaFace's statistics were updated by this forward before its
    # logits used them: the buffers now hold the values that step used.
    kwargs = state_kwargs(cfg, head)
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


def test_normalized_linear_gradcheck_and_zero_rows() -> None:
    # The heads' cosine goes through a hand-written backward; check it alone. At a zero (or
    # below-eps) centre the map is not differentiable in w (a step of h moves x·w/‖w‖ by O(1)),
    # so there it is compared with autograd's backward of the same expression, the eps guard of
    # F.normalize, instead of with finite differences.
    torch.manual_seed(5)
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(normalized_linear, (x, w), eps=1e-6, atol=1e-8, rtol=1e-7)
    x_hat = F.normalize(x.detach(), dim=1).requires_grad_(True)
    assert torch.autograd.gradcheck(normalized_linear, (x_hat, w), eps=1e-6, atol=1e-8)

    degenerate = w.detach().clone()
    degenerate[2] = 0.0
    degenerate[5] *= 1e-14  # below eps: the clamp is active, the row is not zero
    rows = [0, 1, 3, 4, 6]

    def fn(x: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
        return normalized_linear(x, degenerate.index_copy(0, torch.tensor(rows), free))

    free = degenerate[rows].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (x, free), eps=1e-6, atol=1e-8, rtol=1e-7)

    grad = torch.randn(6, 7, dtype=torch.float64)
    w_mine, w_ref = degenerate.clone().requires_grad_(True), degenerate.clone().requires_grad_(True)
    x_mine, x_ref = x.detach().clone().requires_grad_(True), x.detach().clone().requires_grad_(True)
    mine = normalized_linear(x_mine, w_mine)
    ref = F.linear(x_ref, w_ref) / torch.linalg.vector_norm(w_ref, dim=1).clamp(min=1e-12)
    assert torch.equal(mine, ref)
    assert (mine[:, 2] == 0).all()
    mine.backward(grad)
    ref.backward(grad)
    assert torch.isfinite(w_mine.grad).all() and torch.isfinite(x_mine.grad).all()
    torch.testing.assert_close(x_mine.grad, x_ref.grad, rtol=1e-12, atol=0)
    torch.testing.assert_close(w_mine.grad, w_ref.grad, rtol=1e-12, atol=0)
    # Clamp active: no gradient through the norm, so the zero row gets (g / eps)ᵀ x.
    torch.testing.assert_close(w_mine.grad[2], grad[:, 2] @ x.detach() / 1e-12, rtol=1e-12, atol=0)

    # float32 values are those of the expression it replaces.
    x32, w32 = x.detach().float(), w.detach().float()
    ref32 = F.linear(x32, w32) / torch.linalg.vector_norm(w32, dim=1).clamp(min=1e-12)
    assert torch.equal(normalized_linear(x32, w32), ref32)

    # Differentiable once: a double backward raises instead of returning a wrong result.
    loss = normalized_linear(x, w).square().sum()  # its gradient depends on x
    (grad_x,) = torch.autograd.grad(loss, x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad_x.sum().backward()


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
    if class_name(cfg) == "CurricularFace":
        assert state["t"].item() != 0.0
    if class_name(cfg) == "AdaFace":
        assert state["batch_mean"].item() != 20.0 and state["batch_std"].item() != 100.0

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
        ("facerec.heads.subcenter_arcface.SubcenterArcFace", {"k": 0}),
        ("facerec.heads.magface.MagFace", {"l_a": 120.0}),
        ("facerec.heads.magface.MagFace", {"fallback": "clip"}),
        ("facerec.heads.curricularface.CurricularFace", {"momentum": 1.5}),
        ("facerec.heads.adaface.AdaFace", {"momentum": -0.1}),
    ],
)
def test_invalid_arguments_raise(target: str, kwargs: dict) -> None:
    cfg = OmegaConf.create({"_target_": target, **kwargs})
    with pytest.raises(Exception, match=r"must|needs"):
        build(cfg, num_classes=2)
