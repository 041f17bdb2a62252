"""The IJB tables on stdout and the ROC figure (``facerec evaluate --ijb``)."""

from __future__ import annotations

from pathlib import Path

import cv2

from facerec.eval.ijb_verify import VerificationNumbers, roc_for_figure

__all__ = ["print_one_to_n", "print_one_to_one", "save_roc"]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def print_one_to_one(numbers: VerificationNumbers, target: str, mode: str) -> None:
    """TAR (%) at each FAR, insightface's reading and the conservative one, and AUC."""
    fars = list(numbers.insightface)
    print(f"\n{target} 1:1 verification, mode {mode}: {numbers.pairs:,} pairs "
          f"({numbers.positives:,} same, {numbers.negatives:,} different), "
          f"AUC {100 * numbers.auc:.2f}%")  # fmt: skip
    print(f"{'TAR (%) @ FAR':<26}" + "".join(f"{far:>9.0e}" for far in fars))
    rows = (("insightface (nearest FAR)", numbers.insightface),
            ("conservative (FAR <= x)", numbers.conservative))  # fmt: skip
    for label, points in rows:
        print(f"{label:<26}" + "".join(f"{_pct(points[far].tar):>9}" for far in fars))
    unresolved = [f"{far:g}" for far in fars if not numbers.resolvable(far)]
    if unresolved:
        print(f"FAR {', '.join(unresolved)}: below 1 / {numbers.negatives:,} negative pairs; "
              "those columns read the curve at FAR 0 or its nearest point")  # fmt: skip


def print_one_to_n(found: dict, target: str, mode: str) -> None:
    """Rank-1/5/10 and TPIR@FPIR per gallery and averaged, then the G1 u G2 closed-set line."""
    galleries = found["galleries"]
    first = next(iter(galleries.values()))
    fpirs = list(first["tpir_at_fpir"])
    print(f"\n{target} 1:N identification, mode {mode} (open set; %)")
    header = f"{'gallery':<28}{'mated':>7}{'non-mated':>10}{'rank1':>7}{'rank5':>7}{'rank10':>7}"
    print(header + "".join(f"{'TPIR@FPIR=' + f:>17}" for f in fpirs))
    for name, r in [*galleries.items(), ("average", found["average"])]:
        counts = f"{r['mated']:>7}{r['non_mated']:>10}" if "mated" in r else f"{'':>17}"
        cmc = "".join(f"{_pct(v):>7}" for v in r["cmc"].values())
        tpir = "".join(f"{_pct(r['tpir_at_fpir'][f]['tpir']):>17}" for f in fpirs)
        print(f"{name:<28}{counts}{cmc}{tpir}")
    union = found["closed_set_union"]
    cmc = "".join(f"{_pct(v):>7}" for v in union["cmc"].values())
    tpir = "".join(f"{_pct(v['tpir']):>17}" for v in union["tpir_at_far"].values())
    print(f"{'G1+G2 closed (insightface)':<28}{union['probes']:>7}{'':>10}{cmc}{tpir}")
    print(
        "closed-set line: insightface ijb_1n.py's reading (TPIR at FAR over all non-mate "
        f"scores, at any rank); {union['without_mate']} probes without a mate left out"
    )


def save_roc(numbers: VerificationNumbers, path: Path, title: str) -> None:
    """The ROC (log FAR from 1e-6) as a PNG."""
    from facerec.eval.plots import roc_image

    fpr, tpr = roc_for_figure(numbers.fpr, numbers.tpr)
    image = roc_image(fpr, tpr, size=600, far_min=1e-6, title=title)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image[..., ::-1])
