"""Figures for docs/heads.md, computed with facerec's own heads.

(a) ``heads_target_logit.png``: the target logit (divided by the head's scale) against the
    angle θ between an embedding and its class centre, for every margin head in
    ``configs/head`` -- the decision-margin curves the papers draw -- plus the norm-adaptive
    heads at a few feature norms and CurricularFace's reweighting of hard negatives.
(b) ``heads_2d_features.png``: a toy run with 2-d embeddings. A small MLP maps synthetic,
    overlapping Gaussian classes to 2-d features and is trained with softmax, normface,
    sphereface, cosface and arcface (each built by ``instantiate`` from its YAML with
    ``embedding_size=2``); the learned features of held-out samples are drawn raw for softmax
    and on the unit circle for the cosine heads, with the class-centre directions.

Everything is seeded and made in the script (no downloads); it runs in about a minute on
one CPU core.

Usage:
    pip install -e '.[docs]'          # matplotlib, not a dependency of the package itself
    python scripts/plot_heads.py       # writes docs/img/heads_*.png
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from facerec.configs import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[1]
HEAD_DIR = CONFIG_DIR / "head"

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:  # pragma: no cover - depends on the environment
    plt = None


def build_head(name: str, embedding_size: int, num_classes: int, **overrides) -> nn.Module:
    """The head of ``configs/head/<name>.yaml`` with ``overrides``, in float64."""
    cfg = OmegaConf.merge(OmegaConf.load(HEAD_DIR / f"{name}.yaml"), overrides)
    head = instantiate(cfg, embedding_size=embedding_size, num_classes=num_classes)
    return head.double()


def head_scale(head: nn.Module) -> float:
    """The factor the head multiplies its logits by at unit feature norm."""
    return float(head.s) if hasattr(head, "s") else 1.0  # SphereFace: ‖x‖ = 1


# --- (a) target logit against θ ---------------------------------------------------------------


def target_curve(head: nn.Module, theta: np.ndarray, norm: float = 1.0) -> np.ndarray:
    """Target logit / scale of embeddings of norm ``norm`` at angle θ from class 0's centre."""
    head.eval()
    with torch.no_grad():
        head.weight.zero_()
        centres = head.sub_centers() if hasattr(head, "sub_centers") else head.weight[:, None]
        centres[0, :, 0] = 1.0  # every sub-centre of class 0 along e_1
        centres[1:, :, 1] = 1.0  # the other classes along e_2 (they do not touch the target)
        angle = torch.from_numpy(theta)
        x = norm * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
        logits = head(x, torch.zeros(len(theta), dtype=torch.long))
    return logits[:, 0].numpy() / head_scale(head)


def fixed_margin_curves(theta: np.ndarray) -> list[tuple[str, np.ndarray, str]]:
    """(label, curve, line style) for every head whose target depends on θ alone, plus the
    ArcFace fallbacks and pure A-Softmax; heads with identical curves share one label."""
    settings: list[tuple[str, str, dict]] = []
    for path in sorted(HEAD_DIR.glob("*.yaml")):
        name = path.stem
        if name in ("softmax", "adaface", "magface"):
            continue  # no angular target (softmax) or a norm-dependent one (panel 2)
        settings.append((name, "sphereface (λ = λ_min = 5)" if name == "sphereface" else name, {}))
        if name == "arcface":
            settings += [("arcface", "arcface (easy_margin)", {"fallback": "easy_margin"})]
            settings += [("arcface", "arcface (none)", {"fallback": "none"})]
        if name == "sphereface":
            label = "sphereface λ = 0 (pure ψ, down to -7 at π)"
            settings += [("sphereface", label, {"base": 0.0, "lambda_min": 0.0})]
    groups: list[tuple[list[str], np.ndarray]] = []
    for name, label, overrides in settings:
        head = build_head(name, 2, 3, **overrides)
        if hasattr(head, "iteration"):
            head.iteration.fill_(10**6)  # SphereFace at the end of its λ annealing (λ_min)
        curve = target_curve(head, theta)
        for labels, other in groups:
            if np.allclose(curve, other, atol=1e-9):
                labels.append(label)
                break
        else:
            groups.append(([label], curve))
    styles = ["-", "--", "-.", ":"]
    return [(", ".join(labels), c, styles[i // 10]) for i, (labels, c) in enumerate(groups)]


def adaptive_curves(theta: np.ndarray) -> list[tuple[str, np.ndarray, str, str]]:
    """(label, curve, colour, style) for AdaFace at g = -1, 0, 1 and MagFace at a = l_a ... u_a."""
    curves = []
    adaface = build_head("adaface", 2, 3)
    # With μ = 10 and σ + ε = h, the standardised norm is g = ‖x‖ - 10.
    adaface.batch_mean.fill_(10.0)
    adaface.batch_std.fill_(adaface.h - adaface.eps)
    for g, label, colour in [
        (-1.0, "g = -1 (low ‖x‖)", "tab:blue"),
        (0.0, "g = 0", "tab:cyan"),
        (1.0, "g = +1 (high ‖x‖)", "tab:purple"),
    ]:
        curves.append((f"adaface {label}", target_curve(adaface, theta, 10.0 + g), colour, "-"))
    magface = build_head("magface", 2, 3)
    for a, colour in [(10.0, "tab:orange"), (60.0, "tab:red"), (110.0, "darkred")]:
        m = magface.margin(torch.tensor(a)).item()
        curves.append(
            (f"magface a={a:.0f} (m={m:.2f})", target_curve(magface, theta, a), colour, "--")
        )
    return curves


def curricular_negatives(theta_j: np.ndarray, theta_y: float, t: float) -> np.ndarray:
    """CurricularFace's logit / s of negatives at angles θ_j, the target at θ_y, for a given t."""
    head = build_head("curricularface", 2, len(theta_j) + 1).eval()
    with torch.no_grad():
        head.t.fill_(t)
        angles = torch.from_numpy(np.concatenate([[theta_y], -theta_j]))
        head.weight.copy_(torch.stack([torch.cos(angles), torch.sin(angles)], dim=1))
        x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
        logits = head(x, torch.zeros(1, dtype=torch.long))
    return logits[0, 1:].numpy() / head.s


def plot_target_logits(path: Path) -> None:
    theta = np.linspace(0.0, math.pi, 721)
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.6))

    ax = axes[0]
    colours = plt.get_cmap("tab10").colors
    for i, (label, curve, style) in enumerate(fixed_margin_curves(theta)):
        ax.plot(theta, curve, style, color=colours[i % 10], lw=1.8, label=label)
    ax.set_title("Margin heads: target logit / s against θ_y")
    ax.set_ylim(-3.2, 1.1)

    ax = axes[1]
    ax.plot(theta, np.cos(theta), color="0.6", lw=1.2, label="normface (cos θ)")
    for label, curve, colour, style in adaptive_curves(theta):
        ax.plot(theta, curve, style, color=colour, lw=1.8, label=label)
    ax.set_title("Norm-adaptive heads: target logit / s at several ‖x‖")
    ax.set_ylim(-2.0, 1.1)

    ax = axes[2]
    theta_y, m = 1.0, build_head("curricularface", 2, 3).m
    ax.plot(theta, np.cos(theta), color="0.6", lw=1.2, label="easy negative: cos θ_j")
    ts = (0.0, 0.3, 0.6, 0.9)
    for t, colour in zip(ts, plt.get_cmap("viridis")(np.linspace(0, 0.9, len(ts))), strict=True):
        curve = curricular_negatives(theta, theta_y, t)
        ax.plot(theta, curve, color=colour, lw=1.8, label=f"t = {t}: cos θ_j·(t + cos θ_j)")
    ax.axvline(theta_y + m, color="k", ls=":", lw=1.2)
    ax.annotate("hard negatives: θ_j < θ_y + m  ", (theta_y + m, -0.6), ha="right", fontsize=9)
    ax.set_title(f"CurricularFace: negative logit / s against θ_j (θ_y = {theta_y}, m = {m})")
    ax.set_ylim(-1.1, 1.9)

    for ax in axes:
        ax.set_xlabel("θ (radians)")
        ax.set_xlim(0.0, math.pi)
        ax.set_xticks([0, math.pi / 4, math.pi / 2, 3 * math.pi / 4, math.pi])
        ax.set_xticklabels(["0", "π/4", "π/2", "3π/4", "π"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8.5, loc="lower left")
    axes[0].set_ylabel("logit / scale")
    axes[2].legend(fontsize=8.5, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- (b) 2-d toy training -----------------------------------------------------------------------

NUM_CLASSES = 8
INPUT_DIM = 16
MEAN_SCALE = 1.0
TOY_HEADS: list[tuple[str, str, dict]] = [
    # (YAML, panel title, overrides for 2-d). s = 16: with 8 classes on a circle, neighbouring
    # centres are only 45° apart (cos = 0.71), so s·(1 - 0.71) must still be a few logits.
    ("softmax", "softmax", {}),
    ("normface", "normface (s=16)", {"s": 16.0}),
    ("sphereface", "sphereface (m=4, λ annealed)", {}),
    # m = 0.2 as CosFace's own 2-d toy: with 45° between neighbours, cos θ_y - 0.35 cannot
    # exceed cos θ_j = 0.71 even at θ_y = 0, so the default margin is infeasible in 2-d.
    ("cosface", "cosface (s=16, m=0.2)", {"s": 16.0, "m": 0.2}),
    ("arcface", "arcface (s=16, m=0.5)", {"s": 16.0}),
]


def toy_data(
    means: torch.Tensor, num_per_class: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples of Gaussian classes around ``means`` (8, 16) with unit noise."""
    labels = torch.arange(NUM_CLASSES).repeat_interleave(num_per_class)
    inputs = means[labels] + torch.randn(len(labels), INPUT_DIM, generator=gen)
    return inputs, labels


def toy_model() -> nn.Module:
    # Ends without BatchNorm: its running statistics would shift the 2-d features between the
    # train and eval passes, which blurs the picture; the cosine heads do not need it.
    return nn.Sequential(
        nn.Linear(INPUT_DIM, 128),
        nn.PReLU(128),
        nn.Linear(128, 128),
        nn.PReLU(128),
        nn.Linear(128, 2),
    )


def train_toy(
    name: str, overrides: dict, data: tuple, steps: int, batch: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Train MLP + head; return held-out features, labels, class-centre directions, accuracy."""
    (train_x, train_y), (test_x, test_y) = data
    torch.manual_seed(seed)
    model = toy_model()
    cfg = OmegaConf.merge(OmegaConf.load(HEAD_DIR / f"{name}.yaml"), overrides)
    head = instantiate(cfg, embedding_size=2, num_classes=NUM_CLASSES)
    params = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=3e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    head.train()
    for _ in range(steps):
        index = torch.randint(len(train_x), (batch,), generator=gen)
        loss = F.cross_entropy(head(model(train_x[index]), train_y[index]), train_y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    model.eval()
    head.eval()
    with torch.no_grad():
        features = model(test_x)
        if name == "softmax":
            predictions = F.linear(features, head.weight, head.bias).argmax(dim=1)
        else:  # nearest class centre in angle: what verification uses
            predictions = (F.normalize(features) @ F.normalize(head.weight).T).argmax(dim=1)
    accuracy = (predictions == test_y).float().mean().item()
    return features.numpy(), test_y.numpy(), head.weight.detach().numpy(), accuracy


def plot_2d_features(path: Path, steps: int) -> None:
    gen = torch.Generator().manual_seed(0)
    # Class means ~4 apart against unit noise: the classes overlap a little (held-out accuracy
    # about 0.96), so the heads differ in how much room they leave between them.
    means = MEAN_SCALE * torch.randn(NUM_CLASSES, INPUT_DIM, generator=gen)
    train = toy_data(means, 600, gen)
    test = toy_data(means, 150, gen)
    fig, axes = plt.subplots(1, len(TOY_HEADS), figsize=(4.4 * len(TOY_HEADS), 4.9))
    colours = plt.get_cmap("tab10").colors
    for ax, (name, title, overrides) in zip(axes, TOY_HEADS, strict=True):
        start = time.perf_counter()
        features, labels, weight, accuracy = train_toy(
            name, overrides, (train, test), steps=steps, batch=256, seed=1
        )
        print(f"  {name:<11} held-out acc {accuracy:.3f}  ({time.perf_counter() - start:.1f} s)")
        if name == "softmax":
            points, radius = features, np.abs(features).max() * 1.05
            ray = radius  # centre directions drawn to the panel's edge
        else:
            points = features / np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)
            radius, ray = 1.15, 1.1
            circle = np.linspace(0, 2 * math.pi, 361)
            ax.plot(np.cos(circle), np.sin(circle), color="0.85", lw=0.8, zorder=0)
        for c in range(NUM_CLASSES):
            sel = labels == c
            ax.scatter(*points[sel].T, s=12, alpha=0.25, color=colours[c], linewidths=0)
            direction = weight[c] / max(np.linalg.norm(weight[c]), 1e-12)
            ax.plot(
                [0, ray * direction[0]],
                [0, ray * direction[1]],
                color=colours[c],
                lw=1.2,
            )
        ax.set_xlim(-radius, radius)
        ax.set_ylim(-radius, radius)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{title}\nheld-out acc {accuracy:.2f}", fontsize=10)
    fig.suptitle(
        "2-d features of held-out samples (8 classes): raw for softmax, normalised onto the "
        "unit circle for the cosine heads; lines are the class-centre directions",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--steps", type=int, default=2000, help="training steps per toy head")
    args = parser.parse_args()
    if plt is None:
        print(
            "plot_heads.py needs matplotlib, which is not a facerec dependency; install the "
            "docs extra:  pip install -e '.[docs]'",
            file=sys.stderr,
        )
        return 1
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    plot_target_logits(args.out / "heads_target_logit.png")
    print(f"wrote {args.out / 'heads_target_logit.png'}")
    plot_2d_features(args.out / "heads_2d_features.png", args.steps)
    print(f"wrote {args.out / 'heads_2d_features.png'} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
