"""Training objectives: ``(embeddings, labels) -> loss`` and what they own (``configs/criterion``).

* :class:`MarginLoss` — a margin head's cross-entropy over all classes (``criterion=margin``);
* :class:`PartialFC` — the class centres sharded over the ranks (``criterion=partial_fc``);
* :class:`TripletLoss` — mined triplets, no class centres (``criterion=triplet``);
* :class:`WeightedSum` — a weighted sum of criteria (``criterion=margin_triplet``).
* :class:`DistillationLoss` — a margin loss + λ × the distance to a teacher's embedding
  (``criterion=distill``; the teacher is loaded by :mod:`facerec.training.teacher`).

Adding one: a :class:`Criterion` subclass in its own file with a ``build`` classmethod taking
``(make_head, num_classes, embedding_size, *, rank, world_size, seed, **its own options)``,
and ``configs/criterion/<name>.yaml`` naming it.
"""

from facerec.criteria.base import Criterion
from facerec.criteria.distill import DistillationLoss
from facerec.criteria.margin import MarginLoss
from facerec.criteria.partial_fc import PartialFC
from facerec.criteria.triplet import TripletLoss
from facerec.criteria.weighted import WeightedSum

__all__ = ["Criterion", "DistillationLoss", "MarginLoss", "PartialFC", "TripletLoss", "WeightedSum"]
