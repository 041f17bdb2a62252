"""The model card (``README.md``) of an exported model folder, written from its ``config.json``.

Everything in it is read from what training recorded (the checkpoint's config and summary):
the data, the recipe, the steps and the verification table with its protocol. Nothing is
measured here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["essentials", "model_card"]


def _name(section: Any) -> str:
    """``facerec.heads.arcface.ArcFace`` -> ``ArcFace``, ``...MarginCriterion.build`` ->
    ``MarginCriterion`` (the class, not its factory); ``-`` when there is no section."""
    target = section.get("_target_") if isinstance(section, Mapping) else None
    if not target:
        return "-"
    parts = str(target).split(".")
    return next((part for part in reversed(parts) if part[:1].isupper()), parts[-1])


def _arguments(section: Any, skip: tuple[str, ...] = ()) -> str:
    """``s=64.0, m=0.5``: a section's own values (no ``_target_``, no nested sections)."""
    if not isinstance(section, Mapping):
        return ""
    items = [
        f"{k}={v}"
        for k, v in section.items()
        if not k.startswith("_") and k not in skip and not isinstance(v, (Mapping, list))
    ]
    return ", ".join(items)


def _recipe(training: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    trainer = training.get("trainer") or {}
    data = training.get("data") or {}
    rows = [
        ("backbone", f"{_name(config['backbone'])} ({_arguments(config['backbone'])})"),
        ("embedding", f"{_name(config['embedding'])} ({_arguments(config['embedding'])})"),
        ("head", f"{_name(training.get('head'))} ({_arguments(training.get('head'))})"),
        ("criterion", _name(training.get("criterion"))),
        ("optimizer", f"{_name(training.get('optim'))} ({_arguments(training.get('optim'))})"),
        ("schedule", f"{_name(training.get('sched'))} ({_arguments(training.get('sched'))})"),
        ("batch size", f"{data.get('batch_size')} per process x {trainer.get('accumulate', 1)}"),
        (
            "length",
            f"epochs={trainer.get('epochs')}, max_steps={trainer.get('max_steps')},"
            f" max_images={trainer.get('max_images')}",
        ),
        ("precision", f"amp={trainer.get('amp')}"),
        ("seed", str(training.get("seed"))),
    ]
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def _verification(results: Mapping[str, Any]) -> list[str]:
    if not results:
        return ["No verification set was evaluated during training."]
    lines = [
        "| set | accuracy | threshold | TAR@FAR=1e-3 | ROC AUC | EER | accuracy (no flip) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():

        def value(key: str, r: Mapping[str, Any] = r) -> str:
            return f"{r[key]:.4f}" if isinstance(r.get(key), (int, float)) else "-"

        accuracy = f"{value('accuracy')} ± {value('accuracy_std')}"
        lines.append(
            f"| {name} | {accuracy} | {value('threshold')} | {value('tar_at_far')} | "
            f"{value('auc')} | {value('eer')} | {value('accuracy_noflip')} |"
        )
    return lines


def _data(training: Mapping[str, Any]) -> list[str]:
    data = training.get("data") or {}
    val = training.get("val") or {}
    return [
        f"- data module `{data.get('_target_')}`, root `{data.get('root')}`"
        + (f", images `{data['image_dir']}`" if data.get("image_dir") else ""),
        f"- identities kept: people file `{data.get('people_file')}`, at least "
        f"{data.get('min_images')} image(s) each; {training.get('num_classes')} classes",
        "- verified on: "
        + (", ".join(f"{name} (`{where}`)" for name, where in val.items()) or "none"),
    ]


def _decision(threshold: Mapping[str, Any] | None) -> str:
    if not threshold:
        return "No threshold shipped: run `facerec evaluate` on this folder to choose one."
    return (
        f"Threshold {threshold['threshold']:.4f} (squared distance; same person below it); "
        f"`threshold.json` says it was chosen on `{threshold.get('set')}` at step "
        f"{threshold.get('step')}. `facerec verify` refuses a threshold file at 2.0 or more "
        "(cosine <= 0) and checks it on a set of yours with `--reference`."
    )


def _use(prep: Mapping[str, Any]) -> list[str]:
    return [
        "## Use",
        "",
        "```bash",
        "facerec verify THIS_FOLDER a.jpg b.jpg",
        "facerec extract THIS_FOLDER faces/ --out emb.npy",
        "facerec evaluate THIS_FOLDER --sets lfw=pairs.txt:lfw-deepfunneled",
        "```",
        "",
        "`facerec.FaceEmbedder.load(folder)` embeds and compares faces in Python; nothing in the "
        "folder is unpickled.",
        "",
        "## Preprocessing",
        "",
        f"RGB, centre crop {prep.get('center_crop') or 'none'}, resize to "
        f"{prep['image_size']}x{prep['image_size']} ({prep.get('resize')}), alignment: "
        f"{prep.get('alignment') or 'none (images used as given)'}, then "
        f"{prep['normalisation']['formula']}, NCHW.",
    ]


def _title(config: Mapping[str, Any]) -> str:
    training = config.get("training") or {}
    return str(training.get("name") or f"{_name(config['backbone'])}-{_name(training.get('head'))}")


def essentials(config: Mapping[str, Any]) -> dict[str, Any]:
    """The card's essentials as plain values, for a page: the title, the architecture, the
    training data and the verification results training recorded.

    Args:
        config: :func:`facerec.inference.folder.describe`'s dict.

    Returns:
        ``title``, ``backbone``, ``embedding`` (``"Name (args)"``), ``embedding_size``,
        ``head``, ``step``, ``epoch``, ``num_classes``, ``data`` (root and people file as
        text), ``results`` (set -> its recorded numbers), ``protocol``.
    """
    training = config.get("training") or {}
    data = training.get("data") or {}
    return {
        "title": _title(config),
        "backbone": f"{_name(config['backbone'])} ({_arguments(config['backbone'])})",
        "embedding": f"{_name(config['embedding'])} ({_arguments(config['embedding'])})",
        "embedding_size": config.get("embedding_size"),
        "head": f"{_name(training.get('head'))} ({_arguments(training.get('head'))})",
        **{k: training.get(k) for k in ("step", "epoch", "num_classes")},
        "data": ", ".join(f"{k} {data[k]}" for k in ("root", "people_file") if data.get(k)),
        "results": dict(training.get("results") or {}),
        "protocol": (config.get("comparison") or {}).get("protocol"),
    }


def model_card(config: Mapping[str, Any], threshold: Mapping[str, Any] | None = None) -> str:
    """The Markdown model card of a folder whose ``config.json`` is ``config``.

    Args:
        config: :func:`facerec.inference.folder.describe`'s dict.
        threshold: the threshold record shipped with the model, if any.
    """
    training = config.get("training") or {}
    lines = [
        "---",
        "library_name: facerec",
        "tags: [face-recognition, face-verification]",
        "---",
        f"# {_title(config)}",
        "",
        f"A facerec face-embedding model: {_name(config['backbone'])} backbone + "
        f"{_name(config['embedding'])} layer, {config.get('embedding_size')}-d embeddings, "
        f"after {training.get('step')} training steps (epoch {training.get('epoch')}). The "
        f"margin head is not included.",
        "",
        *_use(config["preprocessing"]),
        "",
        "## Training data",
        "",
        *_data(training),
        "",
        "## Recipe",
        "",
        *_recipe(training, config),
        "",
        "## Verification",
        "",
        f"At the last evaluation during training (best accuracy {training.get('best')} at step "
        f"{training.get('best_step')}). Protocol: {config['comparison']['protocol']}.",
        "",
        *_verification(training.get("results") or {}),
        "",
        _decision(threshold),
        "",
    ]
    return "\n".join(lines)
