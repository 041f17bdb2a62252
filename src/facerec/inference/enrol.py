"""Identity folders into a gallery: which photos, their embeddings, and what went wrong.

A folder of identity folders (``FOLDER/<name>/<photos>``, searched recursively) is enrolled
photo by photo, each prepared exactly as the model's training images
(:meth:`FaceEmbedder.face_crop`: the aligned face for an aligned model, the photo itself for a
centre-cropped one). A photo that cannot be read, is over the decoder's budget, or (aligned
models) shows no face is skipped; one with several faces keeps the face the model's alignment
picks; both are counted and named in the :class:`Report`, and nothing else is lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from facerec.data.decode import read_image
from facerec.data.folder import IMAGE_EXTENSIONS
from facerec.inference.gallery import Gallery, ImageRecord, fingerprint
from facerec.inference.images import prepare_arrays
from facerec.messages import first_line

__all__ = ["Report", "add_folders", "build_gallery", "check_model", "embed_photos",
           "identity_folders", "model_record", "remove_from"]  # fmt: skip

Entries = dict[str, tuple[list[ImageRecord], np.ndarray]]


@dataclass
class Report:
    """What enrolment did: counts, and every skipped or doubtful file by name."""

    embedded: int = 0
    reused: int = 0
    unreadable: list[str] = field(default_factory=list)
    no_face: list[str] = field(default_factory=list)
    several_faces: list[str] = field(default_factory=list)
    empty_folders: list[str] = field(default_factory=list)

    def lines(self, gallery: Gallery | None = None, examples: int = 5) -> list[str]:
        """A summary line, then up to ``examples`` files per problem."""
        head = f"{self.embedded} photo(s) embedded, {self.reused} unchanged kept"
        if gallery is not None:
            head = (f"{len(gallery.names)} identities, {len(gallery.embeddings)} images; "
                    f"{head}")  # fmt: skip
        head += (
            f"; {len(self.no_face)} without a face skipped, {len(self.unreadable)} "
            f"unreadable skipped, {len(self.several_faces)} with several faces (the "
            f"alignment's pick kept), {len(self.empty_folders)} empty identity folder(s)"
        )
        named = {k: getattr(self, k) for k in ("unreadable", "no_face", "several_faces",
                                                 "empty_folders")}  # fmt: skip
        return [head] + [
            f"  {kind}: {item}" if i < examples else f"  {kind}: ... and {len(v) - i} more"
            for kind, v in named.items()
            for i, item in enumerate(v[: examples + 1])
        ]


def identity_folders(root: str | Path, report: Report) -> dict[str, list[Path]]:
    """``{name: photos}`` of each sub-folder of ``root`` (photos found recursively, sorted);
    an identity folder without photos is named in ``report.empty_folders`` and left out.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: it has no identity folders.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"identity folder not found (or not a folder): {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise ValueError(f"{root}: no identity folders in it (expected {root}/<name>/<photos>)")
    out = {}
    for folder in folders:
        photos = sorted(p for p in folder.rglob("*")
                        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())  # fmt: skip
        if photos:
            out[folder.name] = [p.resolve() for p in photos]
        else:
            report.empty_folders.append(str(folder))
    return out


def embed_photos(embedder, paths: Sequence[Path], report: Report, progress: bool = True):
    """The embeddings of the photos that give a face, in order.

    Returns:
        ``(records, embeddings (n, D) float32)``: one record per photo kept.
    """
    records, crops, chunks = [], [], []
    size = embedder.preprocessing.image_size

    def flush() -> None:
        if crops:
            chunks.append(embedder.embed(prepare_arrays(crops, size, embedder.crop)))
            crops.clear()

    for path in tqdm(paths, desc="embed", unit="photo", disable=not progress or None):
        try:
            crop, faces = embedder.face_crop(read_image(path))
        except (OSError, ValueError) as error:
            report.unreadable.append(first_line(error) if str(error).strip() else str(path))
            continue
        if crop is None:
            report.no_face.append(str(path))
            continue
        if faces is not None and faces > 1:
            report.several_faces.append(str(path))
        crops.append(crop)
        records.append(ImageRecord.of(Path(path)))
        if len(crops) == embedder.batch_size:
            flush()
    flush()
    report.embedded += len(records)
    dim = embedder.spec.embedding_size or 0
    return records, (np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32))


def model_record(embedder) -> dict:
    """The gallery's ``model`` entry for ``embedder``: fingerprint, source, embedding size."""
    dim = embedder.spec.embedding_size
    if dim is None:  # a graph that is run, not rebuilt (ONNX): ask it
        side = embedder.preprocessing.image_size
        dim = embedder.embed(torch.zeros((1, 3, side, side), dtype=torch.uint8)).shape[1]
    return {"fingerprint": fingerprint(embedder.model, embedder.preprocessing, embedder.path),
            "source": str(embedder.path), "embedding_size": int(dim)}  # fmt: skip


def check_model(gallery: Gallery, record: dict, where: str | Path) -> None:
    """Refuse a gallery embedded by another model than ``record`` (:func:`model_record`)."""
    if gallery.model["fingerprint"] != record["fingerprint"]:
        raise ValueError(
            f"{where} refused: it was built by another model ({gallery.model.get('source')}, "
            f"fingerprint {gallery.model['fingerprint']}), not {record['source']} (fingerprint "
            f"{record['fingerprint']}); its embeddings cannot be compared: rebuild it"
        )


def build_gallery(embedder, root, dtype: str = "float32", progress: bool = True):
    """A new gallery of the identity folders under ``root``: ``(Gallery, Report)``."""
    model = model_record(embedder)
    empty = Gallery([], [], np.zeros((0, model["embedding_size"]), dtype), model)
    return add_folders(empty, embedder, root, progress)


def add_folders(gallery: Gallery, embedder, root, progress: bool = True):
    """``gallery`` with the photos under ``root``'s identity folders added: a photo already
    enrolled with the same size and mtime keeps its embedding, a new or changed one is
    embedded (changed replaces). Photos not under ``root`` stay. ``(Gallery, Report)``."""
    report = Report()
    entries = gallery.entries()
    wanted = identity_folders(root, report)
    enrolled = {r for records, _ in entries.values() for r in records}
    fresh = {p: name for name, photos in wanted.items() for p in photos
             if ImageRecord.of(p) not in enrolled}  # fmt: skip
    report.reused = sum(map(len, wanted.values())) - len(fresh)
    records, emb = embed_photos(embedder, list(fresh), report, progress)  # one pass, all people
    for name in sorted({fresh[p] for p in fresh}):
        old, old_emb = entries.get(name, ([], gallery.embeddings[:0]))
        # a changed photo is replaced, even when it no longer gives a face
        keep = [i for i, r in enumerate(old) if Path(r.file) not in fresh]
        mine = [i for i, r in enumerate(records) if fresh[Path(r.file)] == name]
        rows = np.concatenate([old_emb[keep], emb[mine].astype(old_emb.dtype)])
        entries[name] = ([old[i] for i in keep] + [records[i] for i in mine], rows)
    return gallery.with_identities(entries), report


def remove_from(gallery: Gallery, names: Sequence[str] = (), files: Sequence[str | Path] = ()):
    """``gallery`` without the identities ``names`` and the photos ``files`` (an identity left
    without photos goes too).

    Raises:
        ValueError: a name or file that is not in the gallery (nothing is removed then).
    """
    entries = gallery.entries()
    missing = [n for n in names if n not in entries]
    targets = {str(Path(f).resolve()) for f in files}
    enrolled = {r.file for records, _ in entries.values() for r in records}
    missing += sorted(targets - enrolled)
    if missing:
        raise ValueError(f"not in the gallery: {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}; nothing removed")  # fmt: skip
    for name in names:
        del entries[name]
    for name, (records, emb) in entries.items():
        keep = [i for i, r in enumerate(records) if r.file not in targets]
        entries[name] = ([records[i] for i in keep], emb[keep])
    return gallery.with_identities(entries)
