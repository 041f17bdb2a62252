#!/usr/bin/env python
"""Gallery search at scale: exact matrix product against FAISS indexes, on synthetic templates.

    python scripts/bench_search.py --sizes 10000 100000 --queries 2000
    python scripts/bench_search.py --sizes 1000000 --float16 --indexes IVF4096,SQ8:nprobe=64

Templates are clustered like real face embeddings: each identity a random centre on the unit
sphere, with an uneven spectrum (a power law over the 512 coordinates: real embeddings fill
few directions), its template the L2-normalised sum of 3 noisy images (cosine about 0.7 to the
centre, about 0.5 between two images of a person), and each query a fresh noisy image of a
random enrolled identity. For each size: build seconds, memory per identity (the index's
bytes / K), queries per second (all queries in one call, the threads FAISS is given), and
recall@1 against exact search in the same run. A markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np
from tqdm import tqdm

from facerec.inference.search import ExactIndex, FaissIndex, faiss_module

IMAGES = 3  # images per identity summed into its template
NOISE = 1.0  # norm of the noise added to a unit centre: image . centre ~ 1 / sqrt(2)


def spectrum(dim: int) -> np.ndarray:
    """Per-coordinate scales of the centres: a power law, normalised to unit mean square."""
    s = np.arange(1, dim + 1, dtype=np.float64) ** -0.5
    return (s / np.sqrt((s**2).mean())).astype(np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def noisy(centres: np.ndarray, rng: np.random.Generator, images: int) -> np.ndarray:
    """The L2-normalised sum of ``images`` noisy unit images of each centre, float32."""
    total = np.zeros_like(centres)
    for _ in range(images):
        noise = rng.standard_normal(centres.shape, dtype=np.float32)
        total += unit(centres + NOISE * noise / np.sqrt(centres.shape[1]))
    return unit(total)


def synthetic(n: int, dim: int, queries: int, dtype, seed: int = 0):
    """``(templates (n, dim) dtype, queries (Q, dim) float32, identity of each query (Q,))``,
    made a block of identities at a time (1M x 512 float32 would be 2 GiB per copy)."""
    rng = np.random.default_rng(seed)
    scale, templates = spectrum(dim), np.empty((n, dim), dtype)
    truth = np.sort(rng.choice(n, size=queries, replace=queries > n))
    probes = np.empty((queries, dim), np.float32)
    for start in tqdm(range(0, n, 100_000), desc=f"synthetic {n}", disable=None, leave=False):
        centres = unit(rng.standard_normal((min(100_000, n - start), dim), np.float32) * scale)
        templates[start : start + len(centres)] = noisy(centres, rng, IMAGES)
        mine = (truth >= start) & (truth < start + len(centres))
        probes[mine] = noisy(centres[truth[mine] - start], rng, 1)
    order = rng.permutation(queries)
    return templates, probes[order], truth[order]


def measure(index, queries: np.ndarray, k: int = 1) -> tuple[float, np.ndarray]:
    """Queries per second of one batched call, and the top-1 ids ``(Q,)``."""
    index.search(queries[:10], k)  # warm-up
    tick = time.perf_counter()
    _, ids = index.search(queries, k)
    return len(queries) / (time.perf_counter() - tick), ids[:, 0]


def rows_for(n: int, templates, queries, truth, indexes: list[str]) -> list[str]:
    """One table row per index for gallery size ``n``."""
    tick = time.perf_counter()
    exact = ExactIndex(templates)
    built = time.perf_counter() - tick
    qps, best = measure(exact, queries)
    exact_top1 = (best == truth).mean()
    rows = [row(n, f"exact ({templates.dtype})", built, exact.nbytes / n, qps, 1.0, exact_top1)]
    for spec in indexes:
        factory, _, params = spec.partition(":")
        tick = time.perf_counter()
        index = FaissIndex(templates, factory, params)
        built = time.perf_counter() - tick
        qps, ids = measure(index, queries)
        recall, top1 = (ids == best).mean(), (ids == truth).mean()
        rows.append(row(n, f"faiss {factory} {params}", built, index.nbytes / n, qps, recall, top1))
        print(rows[-1], file=sys.stderr)
        del index
    return rows


def row(n, name, built, per_id, qps, recall, top1) -> str:
    return (f"| {n:,} | {name} | {built:.1f} | {per_id:,.0f} | {per_id * n / 2**20:,.0f} | "
            f"{qps:,.0f} | {recall:.4f} | {top1:.4f} |")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument(
        "--indexes",
        nargs="+",
        metavar="FACTORY[:PARAMS]",
        default=["IVF1024,SQ8:nprobe=32", "HNSW32_SQ8:efSearch=256"],
        help="FAISS index-factory strings, each with its search parameters",
    )
    parser.add_argument("--threads", type=int, default=2, help="FAISS threads (OpenMP)")
    parser.add_argument("--float16", action="store_true", help="keep the templates as float16")
    args = parser.parse_args(argv)
    faiss_module().omp_set_num_threads(args.threads)
    print("| identities | index | build s | bytes / identity | index MiB | queries/s | "
          "recall@1 vs exact | top-1 = true identity |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    dtype = np.float16 if args.float16 else np.float32
    for n in args.sizes:
        data = synthetic(n, args.dim, args.queries, dtype)
        for line in rows_for(n, *data, args.indexes):
            print(line, flush=True)
        del data
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print(f"\npeak resident memory of the whole run (data, exact search, indexes): {peak:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
