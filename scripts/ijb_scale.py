#!/usr/bin/env python
"""Peak memory and time of the IJB stages at IJB-C's sizes (docs/evaluation.md, "IJB: scale").

    # template features -> 15.7M pair scores -> ROC; 1:N over G1/G2 and the union (no images)
    python scripts/ijb_scale.py metrics
    # the embedding stage on a synthetic tree of N faces (links to one LFW photo), tiny model
    python scripts/ijb_scale.py command --faces 2048 --chunk 256 --lfw data/lfw --work /tmp/s

Prints the stage times and the process's resident memory (the DataLoader workers' own peak
separately).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

# IJB-C 1:1: 23,124 templates, 19,557 genuine + 15,638,932 impostor pairs; 1:N: G1 1,772 and
# G2 1,759 gallery templates, 19,593 probe templates; 512-d features.
TEMPLATES, GENUINE, IMPOSTOR, G1, G2, PROBES, DIM = 23124, 19557, 15638932, 1772, 1759, 19593, 512


def peak_mb() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def metrics() -> None:
    from facerec.eval.ijb import Templates, pair_scores
    from facerec.eval.ijb_search import identification
    from facerec.eval.ijb_verify import verify

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(TEMPLATES, DIM))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    n = GENUINE + IMPOSTOR
    a, b = rng.integers(0, TEMPLATES, n), rng.integers(0, TEMPLATES, n)
    same = np.zeros(n, bool)
    same[:GENUINE] = True
    print(f"inputs built: peak {peak_mb()[0]:,.0f} MB")
    tick = time.perf_counter()
    scores = pair_scores(feats, a, b)
    print(f"pair scores {n:,}: {time.perf_counter() - tick:.1f} s, peak {peak_mb()[0]:,.0f} MB")
    tick = time.perf_counter()
    numbers = verify(scores + same, same)
    print(f"ROC + TAR@FAR: {time.perf_counter() - tick:.1f} s, peak {peak_mb()[0]:,.0f} MB "
          f"(AUC {numbers.auc:.4f})")  # fmt: skip
    del scores, a, b, same
    templates = Templates.of(np.arange(TEMPLATES), np.arange(TEMPLATES))
    subjects = rng.integers(0, G1 + G2, PROBES)
    galleries = {"G1": (np.arange(G1), np.arange(G1)),
                 "G2": (np.arange(G1, G1 + G2), np.arange(G1, G1 + G2))}  # fmt: skip
    tick = time.perf_counter()
    identification(feats, templates, galleries, (np.arange(G1 + G2, TEMPLATES), subjects))
    print(f"1:N: {time.perf_counter() - tick:.1f} s, peak {peak_mb()[0]:,.0f} MB")


def build_tree(lfw: Path, work: Path, faces: int) -> Path:
    """``faces`` face rows, 10 per template in 2 medias, over hard links of one LFW photo."""
    from facerec.align.detect import FaceDetector
    from facerec.data.decode import read_image

    src = lfw / "lfw-deepfunneled/George_W_Bush/George_W_Bush_0001.jpg"
    import torch

    face = FaceDetector(torch.device("cpu")).detect([read_image(src)])[0][0]
    marks = " ".join(f"{v:.3f}" for v in face.landmarks.ravel())
    base = work / "IJBC"
    shutil.rmtree(work, ignore_errors=True)
    (base / "loose_crop").mkdir(parents=True)
    (base / "meta").mkdir()
    tid, pts = [], []
    for i in range(faces):
        (base / "loose_crop" / f"{i}.jpg").hardlink_to(src)
        tid.append(f"{i}.jpg {i // 10} {i // 5}")
        pts.append(f"{i}.jpg {marks} {face.score:.4f}")
    (base / "meta/ijbc_face_tid_mid.txt").write_text("\n".join(tid) + "\n")
    (base / "meta/ijbc_name_5pts_score.txt").write_text("\n".join(pts) + "\n")
    t = faces // 10
    pairs = [f"{x} {(x + d) % t} {int(d == 0)}" for x in range(t) for d in range(0, 50)]
    (base / "meta/ijbc_template_pair_label.txt").write_text("\n".join(pairs) + "\n")
    return work


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process, from /proc (Linux)."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def command(args: argparse.Namespace) -> None:
    """The embedding stage as the command runs it, in chunks of ``--chunk`` faces, with the
    resident memory after each chunk: flat from the first chunk on means bounded."""
    from safetensors.torch import save_file

    from facerec.data.ijb import IJBFiles, read_faces
    from facerec.inference import FaceEmbedder
    from facerec.inference.ijb_features import AlignedFaces, FeatureCache, embed_faces
    from facerec.model import build_face_model

    root = build_tree(args.lfw, args.work, args.faces)
    config = json.loads((Path(__file__).parents[1] / "tests/fixtures/pretrained_v1_config.json")
                        .read_text())  # fmt: skip
    (args.work / "model").mkdir()
    (args.work / "model/config.json").write_text(json.dumps(config))
    save_file(
        build_face_model(config).eval().state_dict(), str(args.work / "model/model.safetensors")
    )
    embedder = FaceEmbedder.load(args.work / "model", args.device)
    files = IJBFiles.under(root, "IJBC")
    faces = read_faces(files)
    dataset = AlignedFaces(files.images, faces.names, faces.landmarks, 112)
    cache = FeatureCache(args.work / "cache", {"target": "IJBC"}, len(faces.names), args.chunk)
    print(f"model loaded, {args.faces:,} faces read: RSS {rss_mb()[0]:,.0f} MB")
    tick = time.perf_counter()

    def report(k: int) -> None:
        now, peak = rss_mb()
        print(f"chunk {k}: RSS {now:,.0f} MB, peak {peak:,.0f} MB")

    embed_faces(embedder.model, dataset, cache, embedder.device, 32, 2, on_chunk=report)
    print(f"{args.faces:,} faces in {time.perf_counter() - tick:.1f} s; peak {rss_mb()[1]:,.0f} "
          f"MB (main process), {peak_mb()[1]:,.0f} MB (largest worker)")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("metrics", "command"))
    parser.add_argument("--faces", type=int, default=2048)
    parser.add_argument("--lfw", type=Path, default=Path("data/lfw"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/ijb-scale"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chunk", type=int, default=256, help="faces per cache chunk")
    args = parser.parse_args()
    sys.exit(metrics() if args.stage == "metrics" else command(args))
