"""A weighted sum of criteria, e.g. a margin head + a triplet loss (``criterion=margin_triplet``).

A common fine-tuning recipe keeps the classification signal of a margin head while a pair loss
shapes the distances the verifier uses. Each term is built by its own factory (its YAML's
``_target_``), so any replicated criterion can be a term.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hydra.utils import instantiate
from torch import Tensor, nn

from facerec.criteria.base import Criterion

__all__ = ["WeightedSum"]


class WeightedSum(Criterion):
    """``sum_k weight_k * criterion_k(embeddings (B, D), labels (B,))`` -> 0-d loss.

    Args:
        terms: criteria by name (the names prefix their TensorBoard scalars).
        weights: a weight per name, >= 0.

    Raises:
        ValueError: a term is sharded (its parameters differ per rank), needs the images
            (distillation), or more than one term has a margin head (the checkpoint holds one).
    """

    def __init__(self, terms: Mapping[str, Criterion], weights: Mapping[str, float]) -> None:
        super().__init__()
        if set(terms) != set(weights):
            raise ValueError(
                f"criterion terms {sorted(terms)} and weights {sorted(weights)} differ"
            )
        for name, weight in weights.items():
            if not float(weight) >= 0:
                raise ValueError(f"criterion.terms.{name}.weight={weight} must be >= 0")
        for name, term in terms.items():
            if not term.replicated:
                raise ValueError(f"criterion.terms.{name}: a sharded criterion cannot be a term")
            if type(term).loss is not Criterion.loss:  # only embeddings reach a term
                raise ValueError(f"criterion.terms.{name}: needs the images (e.g. a teacher's "
                                 "embeddings), so it cannot be a term")  # fmt: skip
        heads = [name for name, term in terms.items() if getattr(term, "head", None) is not None]
        if len(heads) > 1:
            raise ValueError(f"criterion.terms {heads}: only one term may have a margin head")
        self.terms = nn.ModuleDict(dict(terms))
        self.weights = {name: float(w) for name, w in weights.items()}
        self._head_term = heads[0] if heads else None
        self._losses: dict[str, Tensor] = {}

    @property
    def head(self) -> nn.Module:
        """The margin head of the term that has one (a property, so it is not registered
        twice); ``AttributeError`` when no term has a head, as for a criterion without one."""
        if self._head_term is None:
            raise AttributeError("no term of this criterion has a margin head")
        return self.terms[self._head_term].head

    @classmethod
    def build(
        cls, make_head: Callable[[int], nn.Module], num_classes: int, embedding_size: int, *,
        terms: Mapping[str, Mapping[str, Any]], **context: Any,
    ) -> WeightedSum:  # fmt: skip
        """The trainer's factory: each entry of ``terms`` is a criterion config (its own
        ``_target_`` and options) plus its ``weight``."""
        built, weights = {}, {}
        for name, spec in terms.items():
            options = dict(spec)
            weights[name] = options.pop("weight", 1.0)
            factory = instantiate(options, _partial_=True)
            built[name] = factory(make_head=make_head, num_classes=num_classes,
                                  embedding_size=embedding_size, **context)  # fmt: skip
        return cls(built, weights)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The weighted sum of the terms' losses (0-d)."""
        losses = {name: term(embeddings, labels) for name, term in self.terms.items()}
        self._losses = {name: loss.detach() for name, loss in losses.items()}  # for scalars()
        return sum(self.weights[name] * loss for name, loss in losses.items())

    def scalars(self) -> dict[str, float]:
        """Each term's loss and scalars, prefixed with its name."""
        out: dict[str, float] = {}
        for name, term in self.terms.items():
            out.update({f"{name}/{key}": value for key, value in term.scalars().items()})
            if name in self._losses:
                out[f"{name}/loss"] = float(self._losses[name])
        return out
