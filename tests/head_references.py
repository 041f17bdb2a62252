"""Naive float64 references of every margin head, and the inputs the head tests share.

Each head class has a reference written here from its paper, independent of the helpers in
``facerec.heads``: a per-sample function of Python floats (``math.acos``/``math.cos``),
registered with ``@reference(<class name>)`` in ``REFERENCES``. The cases (``CASES``) are every
``configs/head/*.yaml`` plus the extra variants in ``VARIANTS``. Used by ``test_heads.py``
(every head against its reference) and ``test_head_state.py`` (the stateful heads' updates).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from facerec.configs import CONFIG_DIR

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
