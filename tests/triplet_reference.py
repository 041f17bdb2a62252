"""An independent float64 triplet loss: loops over anchors, positives and negatives, written
from the papers' definitions (shared by tests/test_triplet.py and tests/test_criteria.py)."""

from __future__ import annotations

import torch


def distance(x: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """One pair's distance, written from the definitions (no Gram matrix)."""
    x, y = x / x.norm(), y / y.norm()
    if kind == "squared_euclidean":
        return ((x - y) ** 2).sum()
    return 1 - (x * y).sum()


def term(gap: torch.Tensor, margin: float, soft: bool) -> torch.Tensor:
    return torch.log1p(torch.exp(gap)) if soft else torch.clamp(gap + margin, min=0)


def naive(emb, labels, mining, kind, margin, soft, anchors=None):
    """The loss by loops over anchors, positives and negatives (first index wins ties).

    ``anchors``: the rows that act as anchors (default all); positives and negatives are drawn
    from every row (a DDP rank's anchors against the gathered batch)."""
    n = len(labels)
    d = [[distance(emb[i], emb[j], kind) for j in range(n)] for i in range(n)]
    lab = labels.tolist()
    pos = {a: [p for p in range(n) if p != a and lab[p] == lab[a]] for a in range(n)}
    neg = {a: [k for k in range(n) if lab[k] != lab[a]] for a in range(n)}
    terms = []
    for a in range(n) if anchors is None else anchors:
        if not neg[a]:
            continue
        if mining == "batch_hard":
            if not pos[a]:
                continue
            p = max(pos[a], key=lambda j: (float(d[a][j].detach()), -j))  # largest; first on ties
            k = min(neg[a], key=lambda j: (float(d[a][j].detach()), j))
            terms.append(term(d[a][p] - d[a][k], margin, soft))
        for p in pos[a]:
            if mining == "batch_all":
                terms += [term(d[a][p] - d[a][k], margin, soft) for k in neg[a]]
            elif mining == "semi_hard":
                inside = [k for k in neg[a] if d[a][p] < d[a][k] < d[a][p] + margin]
                if inside:
                    k = min(inside, key=lambda j: (float(d[a][j].detach()), j))
                else:
                    k = max(neg[a], key=lambda j: (float(d[a][j].detach()), -j))
                terms.append(term(d[a][p] - d[a][k], margin, soft))
    if mining == "batch_all" and not soft:
        terms = [t for t in terms if t > 0]  # Hermans et al.'s BA≠0: the non-zero terms
    if not terms:
        return (emb * 0).sum()
    return torch.stack(terms).mean()
