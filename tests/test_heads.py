"""Tests of the classification heads against the papers' formulas.

Every head is discovered from ``configs/head/*.yaml`` and built the way the trainer builds it,
``instantiate(cfg, embedding_size=D, num_classes=C)``. The reference for each head is a naive
per-sample function of Python floats (``math.acos``/``math.cos``) written here from the paper,
independent of the helpers in ``facerec.heads``: one per head class, registered with
``@reference(<class name>)`` in ``REFERENCES``, so a new head is its module, its YAML and its
reference (a YAML without one fails ``test_every_head_config_has_a_reference``).

Stateful heads (SphereFace's λ, AdaCos's s, CurricularFace's t, AdaFace's norm statistics) are
checked with their state read from the head's buffers, and their updates against naive
recursions in dedicated tests.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.func import functional_call

from facerec.cli import CONFIG_DIR
from facerec.heads.functional import normalized_linear, safe_acos, sin_from_cos

HEAD_DIR = CONFIG_DIR / "head"
HEAD_FILES = sorted(HEAD_DIR.glob("*.yaml"))

D, C = 8, 9

# Extra settings checked besides each YAML's defaults: every ArcFace fallback, SphereFace with
# λ = 0 (pure A-Softmax, the ψ branches fully visible) and m = 3 (odd), the combined margin
# with a multiplicative m1 (the acos path) and an additive m3, every MagFace fallback (per-sample
# margin), sub-centre ArcFace with k = 1 (ArcFace itself) and k = 2 with another fallback.
VARIANTS: dict[str, list[dict]] = {
    "ArcFace": [{"fallback": "th_mm"}, {"fallback": "easy_margin"}, {"fallback": "none"}],
    "SphereFace": [{}, {"base": 0.0, "lambda_min": 0.0}, {"m": 3, "base": 0.0, "lambda_min": 0.0}],
    "CombinedMargin": [{}, {"m1": 1.35, "m2": 0.2, "m3": 0.15}],
    "AdaCos": [{"dynamic": True}, {"dynamic": False}],
    "MagFace": [{"fallback": "easy_margin"}, {"fallback": "th_mm"}, {"fallback": "none"}],
    "SubcenterArcFace": [{}, {"k": 1}, {"k": 2, "fallback": "easy_margin"}],
}

# State set before the naive comparisons, so the margin is not hidden behind an initial value:
# SphereFace far into its annealing (λ = λ_min instead of ≈ 1000), CurricularFace's t away from
# its special value 0, AdaFace's statistics such that the norms of the test embeddings
# (0.5 to 2.5) spread g over [-1, 1] and past both clips (the initial μ = 20, σ = 100 would put
# every g near -0.06).
CURRICULAR_T = 0.3
ADAFACE_MEAN, ADAFACE_STD = 1.5, 0.3

# MagFace's margin depends on ‖x‖ in [l_a, u_a] = [10, 110]: its embeddings are rescaled to these
# norms (cycled over the rows), below, at and inside the bounds and above; zero rows stay zero.
MAGFACE_NORMS = [4.0, 10.0, 23.0, 47.5, 60.0, 85.0, 110.0, 140.0]


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


def set_state(head: torch.nn.Module) -> None:
    """Set the state of the stateful heads to the values described at CURRICULAR_T above."""
    with torch.no_grad():
        if hasattr(head, "iteration"):
            head.iteration.fill_(10**6)
        if hasattr(head, "t"):
            head.t.fill_(CURRICULAR_T)
        if hasattr(head, "batch_mean"):
            head.batch_mean.fill_(ADAFACE_MEAN)
            head.batch_std.fill_(ADAFACE_STD)


def sub_centres_per_class(cfg: DictConfig) -> int:
    return cfg.k if class_name(cfg) == "SubcenterArcFace" else 1


def with_norms(cfg: DictConfig, x: torch.Tensor) -> torch.Tensor:
    """MagFace's embeddings rescaled to MAGFACE_NORMS (directions kept); others unchanged."""
    if class_name(cfg) != "MagFace":
        return x
    norms = torch.tensor(MAGFACE_NORMS, dtype=x.dtype).repeat(len(x) // len(MAGFACE_NORMS) + 1)
    current = x.norm(dim=1, keepdim=True)
    return torch.where(current > 0, x / current * norms[: len(x), None], x)


# --- naive references, one per head ---------------------------------------------------------
#
# Each head class has its own float64 reference below, registered with @reference under the
# class name of its YAML's ``_target_`` (so CosFace's serves cosface.yaml and amsoftmax.yaml):
# ``row(cfg, sample, **state)``, the logits of one sample from the paper's formula in Python
# floats, and ``state(cfg, head)``, the values of ``**state`` that the head holds (Softmax's
# bias, a stateful head's buffers). Adding a head is its .py, its YAML and its reference here;
# a YAML whose class has none fails test_every_head_config_has_a_reference.


def naive_cos(x: list[float], w: list[float]) -> float:
    nx = max(math.sqrt(sum(v * v for v in x)), 1e-12)
    nw = max(math.sqrt(sum(v * v for v in w)), 1e-12)
    c = sum(a * b for a, b in zip(x, w, strict=True)) / (nx * nw)
    return min(1.0, max(-1.0, c))


@dataclass(frozen=True)
class Sample:
    """One embedding, its label and the head's centres, as Python floats."""

    x: list[float]
    label: int
    centres: list[list[float]]  # the rows of ``weight``: (C, D), or (C·k, D) class-major

    @property
    def norm(self) -> float:
        return math.sqrt(sum(v * v for v in self.x))

    def cosines(self, k: int = 1) -> list[float]:
        """Clamped cos θ_j per class: with k rows per class (c·k ... c·k + k - 1), the largest."""
        rows = self.centres
        return [
            max(naive_cos(self.x, rows[j * k + i]) for i in range(k)) for j in range(len(rows) // k)
        ]


def margin_row(
    sample: Sample, s: float, target: Callable[[float], float], k: int = 1
) -> list[float]:
    """``target(cos θ_y)`` in the label's column, ``s · cos θ_j`` in the others."""
    cosines = sample.cosines(k)
    return [target(c) if j == sample.label else s * c for j, c in enumerate(cosines)]


@dataclass(frozen=True)
class Reference:
    row: Callable[..., list[float]]
    state: Callable[[DictConfig, torch.nn.Module], dict[str, Any]]


REFERENCES: dict[str, Reference] = {}


def no_state(cfg: DictConfig, head: torch.nn.Module) -> dict[str, Any]:
    return {}


def reference(name: str, state: Callable[[DictConfig, torch.nn.Module], dict[str, Any]] = no_state):
    """Register the decorated ``row`` as the naive reference of head class ``name``."""

    def register(row: Callable[..., list[float]]) -> Callable[..., list[float]]:
        if name in REFERENCES:
            raise ValueError(f"two naive references for {name}")
        REFERENCES[name] = Reference(row, state)
        return row

    return register


def reference_of(cfg: DictConfig) -> Reference:
    name = class_name(cfg)
    if name not in REFERENCES:
        raise AssertionError(
            f"no naive reference for {name} ({cfg._target_}): add one with "
            f"@reference({name!r}) in tests/test_heads.py"
        )
    return REFERENCES[name]


def naive_logits(
    cfg: DictConfig,
    x: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    **state: Any,
) -> torch.Tensor:
    """Logits from the paper's formula (the head's reference), one sample at a time.

    Args:
        cfg: Head config (its hyper-parameters are read from here, not from the module).
        x: Embeddings (B, D).
        weight: Class centres (C, D); (C·k, D) class-major for sub-centre ArcFace.
        labels: (B,).
        **state: The reference's state: Softmax's ``bias`` (C,), SphereFace's ``lam`` (λ),
            AdaCos's ``s``, CurricularFace's ``t``, AdaFace's ``stats``, the running
            (mean, std) of the feature norm.

    Returns:
        (B, C) float64.
    """
    row = reference_of(cfg).row
    centres = weight.double().tolist()
    samples = [
        Sample(xi, yi, centres) for xi, yi in zip(x.double().tolist(), labels.tolist(), strict=True)
    ]
    return torch.tensor([row(cfg, sample, **state) for sample in samples], dtype=torch.float64)


def state_kwargs(cfg: DictConfig, head: torch.nn.Module) -> dict:
    """The naive reference's state arguments for the head's current state (λ recomputed from
    the iteration counter, the other states read from the buffers)."""
    return reference_of(cfg).state(cfg, head)


def reference_for(cfg: DictConfig, head: torch.nn.Module, x, labels) -> torch.Tensor:
    """Naive logits with the head's current weights and state (AdaCos's initial s checked
    against √2·ln(C - 1) by its state reader)."""
    return naive_logits(cfg, x, head.weight.detach(), labels, **state_kwargs(cfg, head))


@reference("Softmax", state=lambda cfg, head: {"bias": head.bias.detach()})
def reference_softmax(cfg: DictConfig, sample: Sample, *, bias: torch.Tensor) -> list[float]:
    # W x + b on the raw embedding and centres: no normalisation.
    return [
        sum(a * b for a, b in zip(sample.x, wj, strict=True)) + float(bias[j])
        for j, wj in enumerate(sample.centres)
    ]


@reference("NormFace")
def reference_normface(cfg: DictConfig, sample: Sample) -> list[float]:
    return [cfg.s * c for c in sample.cosines()]


def adacos_state(cfg: DictConfig, head: torch.nn.Module) -> dict[str, Any]:
    # The buffer holds √2·ln(C - 1) rounded to float32 at construction (it is created in
    # the default dtype); the logits are checked against the value it actually holds.
    assert head.s.item() == pytest.approx(math.sqrt(2) * math.log(C - 1), rel=1e-7)
    return {"s": head.s.item()}


@reference("AdaCos", state=adacos_state)
def reference_adacos(cfg: DictConfig, sample: Sample, *, s: float) -> list[float]:
    return [s * c for c in sample.cosines()]


@reference("CosFace")
def reference_cosface(cfg: DictConfig, sample: Sample) -> list[float]:
    return margin_row(sample, cfg.s, lambda c: cfg.s * (c - cfg.m))


def naive_arcface(c: float, s: float, m: float, fallback: str) -> float:
    theta = math.acos(c)
    if fallback == "th_mm" and theta > math.pi - m:
        return s * (c - m * math.sin(m))
    if fallback == "easy_margin" and c <= 0:
        return s * c
    return s * math.cos(theta + m)


@reference("ArcFace")
def reference_arcface(cfg: DictConfig, sample: Sample) -> list[float]:
    return margin_row(sample, cfg.s, lambda c: naive_arcface(c, cfg.s, cfg.m, cfg.fallback))


@reference("CombinedMargin")
def reference_combined(cfg: DictConfig, sample: Sample) -> list[float]:
    return margin_row(
        sample, cfg.s, lambda c: cfg.s * (math.cos(cfg.m1 * math.acos(c) + cfg.m2) - cfg.m3)
    )


@reference("AirFace")
def reference_airface(cfg: DictConfig, sample: Sample) -> list[float]:
    # Every logit is linear in its angle; the target's angle gets the margin.
    angles = [math.acos(c) for c in sample.cosines()]
    angles[sample.label] += cfg.m
    return [cfg.s * (math.pi - 2 * angle) / math.pi for angle in angles]


def naive_sphereface_psi(theta: float, m: int) -> float:
    k = min(math.floor(m * theta / math.pi), m - 1)
    return (-1) ** k * math.cos(m * theta) - 2 * k


def naive_lambda(cfg: DictConfig, iteration: int) -> float:
    return max(cfg.lambda_min, cfg.base * (1 + cfg.gamma * iteration) ** (-cfg.power))


@reference("SphereFace", state=lambda cfg, head: {"lam": naive_lambda(cfg, int(head.iteration))})
def reference_sphereface(cfg: DictConfig, sample: Sample, *, lam: float) -> list[float]:
    # Scaled by the embedding's norm instead of a constant s.
    norm = sample.norm

    def target(c: float) -> float:
        psi = naive_sphereface_psi(math.acos(c), cfg.m)
        return (lam * norm * c + norm * psi) / (1 + lam)

    return margin_row(sample, norm, target)


@reference("CurricularFace", state=lambda cfg, head: {"t": head.t.item()})
def reference_curricularface(cfg: DictConfig, sample: Sample, *, t: float) -> list[float]:
    cosines = sample.cosines()
    # A negative is hard above cos(θ_y + m), the plain angle sum without ArcFace's fallback.
    hard_above = math.cos(math.acos(cosines[sample.label]) + cfg.m)
    row = []
    for j, c in enumerate(cosines):
        if j == sample.label:
            row.append(naive_arcface(c, cfg.s, cfg.m, "th_mm"))
        elif c > hard_above:  # hard negative
            row.append(cfg.s * c * (t + c))
        else:
            row.append(cfg.s * c)
    return row


def naive_adaface_target(c: float, norm: float, cfg: DictConfig, mean: float, std: float) -> float:
    eps = 1e-3
    norm = min(100.0, max(1e-3, norm))
    g = min(1.0, max(-1.0, cfg.h * (norm - mean) / (std + eps)))
    angle = min(math.pi - eps, max(eps, math.acos(c) - cfg.m * g))
    return cfg.s * (math.cos(angle) - (cfg.m + cfg.m * g))


@reference(
    "AdaFace", state=lambda cfg, head: {"stats": (head.batch_mean.item(), head.batch_std.item())}
)
def reference_adaface(
    cfg: DictConfig, sample: Sample, *, stats: tuple[float, float]
) -> list[float]:
    return margin_row(sample, cfg.s, lambda c: naive_adaface_target(c, sample.norm, cfg, *stats))


def naive_magface_margin(norm: float, cfg: DictConfig) -> float:
    a = min(cfg.u_a, max(cfg.l_a, norm))
    return (cfg.u_m - cfg.l_m) / (cfg.u_a - cfg.l_a) * (a - cfg.l_a) + cfg.l_m


@reference("MagFace")
def reference_magface(cfg: DictConfig, sample: Sample) -> list[float]:
    margin = naive_magface_margin(sample.norm, cfg)
    return margin_row(sample, cfg.s, lambda c: naive_arcface(c, cfg.s, margin, cfg.fallback))


@reference("SubcenterArcFace")
def reference_subcenter_arcface(cfg: DictConfig, sample: Sample) -> list[float]:
    # A class's cosine is the largest over its k rows c·k ... c·k + k - 1.
    return margin_row(
        sample, cfg.s, lambda c: naive_arcface(c, cfg.s, cfg.m, cfg.fallback), k=cfg.k
    )


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


def expand_sub_centres(weight: torch.Tensor, k: int) -> torch.Tensor:
    """(C, D) centres -> (C·k, D) class-major sub-centres whose first row per class is the
    given centre. Class 0 and the odd classes get the other rows as exact multiples of it
    (×2, ×0.5: the same direction, so their max is an exact tie and θ = 0/π exactly and
    θ near π reach the margin); the even classes get random, seeded ones, where the max picks
    a different sub-centre for some samples."""
    gen = torch.Generator().manual_seed(11)
    rows = []
    for c, centre in enumerate(weight):
        rows.append(centre)
        for i in range(1, k):
            if c == 0 or c % 2:
                rows.append(centre * (2.0 if i % 2 else 0.5))
            else:
                rows.append(torch.randn(centre.shape, generator=gen).to(weight.dtype))
    return torch.stack(rows)


def load_weight(head: torch.nn.Module, weight: torch.Tensor) -> None:
    """Copy (C, D) centres into the head, expanded by expand_sub_centres for sub-centre heads."""
    rows = head.weight.shape[0]
    if rows != weight.shape[0]:
        weight = expand_sub_centres(weight, rows // weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(weight)


def class_centres(head: torch.nn.Module) -> torch.Tensor:
    """A (C, D) view of the class centres: ``weight``, or the first sub-centre of each class."""
    return head.sub_centers()[:, 0] if hasattr(head, "sub_centers") else head.weight


# --- tests ----------------------------------------------------------------------------------


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
