"""A file a user downloaded is data: hostile checkpoints and threshold files given to every tool
and to resume execute nothing, build nothing outside facerec, and get a one-line refusal."""

from __future__ import annotations

import copy
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import save_flatten_onnx

from facerec import inference
from facerec.inference.preprocessing import Preprocessing

ROOT = Path(__file__).resolve().parents[1]


class Payload:
    """Pickles into a call of ``os.system``: what a crafted ``.pt`` runs under a plain load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def malicious_pickle(folder: Path) -> tuple[Path, Path]:
    marker = folder / "pwned-by-pickle"
    path = folder / "evil_pickle.pt"
    torch.save({"model": Payload(marker), "step": 1, "config": {}}, path)
    return path, marker


def malicious_target(folder: Path) -> tuple[Path, Path]:
    """Plain dicts and strings only, but the saved config names ``builtins.open`` as the
    backbone: a tool rebuilding the model through Hydra would create the file."""
    marker = folder / "pwned-by-target"
    hostile = {"_target_": "builtins.open", "file": str(marker), "mode": "w"}
    config = {"backbone": hostile, "embedding": {"_target_": "facerec.embedding.Embedding"}}
    path = folder / "evil_target.pt"
    torch.save({"model": {}, "step": 1, "config": config, "classes": ["a"]}, path)
    return path, marker


MOBILE = "facerec.backbones.mobilefacenet.MobileFaceNet"
EMBEDDING = "facerec.embedding.Embedding"


def interpolated_section(folder: Path) -> tuple[Path, Path]:
    """Every _target_ in backbone/embedding is facerec's own, but an argument is
    ``${some_section}``: resolving it would bring in a section the allow-list never saw."""
    marker = folder / "pwned-by-interpolation"
    config = {
        "backbone": {"_target_": MOBILE, "num_features": "${some_section}"},
        "embedding": {"_target_": EMBEDDING, "embedding_size": 8},
        "some_section": {"_target_": "builtins.open", "file": str(marker), "mode": "w"},
    }
    path = folder / "evil_interpolation.pt"
    torch.save({"model": {}, "step": 1, "config": config, "classes": ["a"]}, path)
    return path, marker


def callable_chain(folder: Path) -> tuple[Path, Path]:
    """Two allowed-looking calls reached through interpolations: write a ``.pth`` file into a
    folder, then add that folder as a site dir (whose ``.pth`` ``import`` lines run)."""
    marker = folder / "pwned-by-chain"
    site = folder / "site"
    site.mkdir(exist_ok=True)
    code = f"import os; open({str(marker)!r}, 'w').close()\n"
    chain = {
        "write": {"_target_": "pathlib.Path.write_text",
                  "self": {"_target_": "pathlib.Path", "_args_": [str(site / "evil.pth")]},
                  "data": code},
        "load": {"_target_": "site.addsitedir", "sitedir": str(site)},
    }  # fmt: skip
    config = {
        "backbone": {"_target_": MOBILE, "num_features": "${chain.write}"},
        "embedding": {"_target_": EMBEDDING, "embedding_size": 8, "dropout": "${chain.load}"},
        "chain": chain,
    }
    path = folder / "evil_chain.pt"
    torch.save({"model": {}, "step": 1, "config": config, "classes": ["a"]}, path)
    return path, marker


HOSTILE = {
    "pickle": malicious_pickle,
    "target": malicious_target,
    "interpolation": interpolated_section,
    "chain": callable_chain,
}


def images(folder: Path, count: int = 2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i}.jpg" for i in range(count)]
    rng = np.random.default_rng(0)
    for p in paths:
        cv2.imwrite(str(p), rng.integers(0, 255, (112, 112, 3), dtype=np.uint8))
    return paths


def tool_commands(ckpt: Path, tmp: Path) -> dict[str, list[str]]:
    a, b = images(tmp / "faces")
    return {
        "verify": [str(ckpt), str(a), str(b)],
        "evaluate": [str(ckpt), "--device", "cpu"],
        "extract": [str(ckpt), str(tmp / "faces"), "--out", str(tmp / "out" / "emb.npy")],
        "export_onnx": [str(ckpt), "--out", str(tmp / "out" / "model.onnx")],
        "export": [str(ckpt), "--out", str(tmp / "out" / "folder")],
    }


@pytest.mark.parametrize("kind", sorted(HOSTILE))
@pytest.mark.parametrize("tool", ["verify", "evaluate", "extract", "export_onnx", "export"])
def test_every_tool_refuses_a_hostile_checkpoint_in_one_line(tool, kind, tmp_path, capsys):
    ckpt, marker = HOSTILE[kind](tmp_path)
    args = tool_commands(ckpt, tmp_path)[tool]
    main = importlib.import_module(f"facerec.cli.{tool}").main
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert not marker.exists(), "the file's code or _target_ ran"
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(ckpt) in err and "refused" in err, err


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_the_loader_refuses_and_names_why(kind, tmp_path):
    ckpt, marker = HOSTILE[kind](tmp_path)
    with pytest.raises(ValueError, match="refused") as error:
        inference.load_model(ckpt, "cpu")
    assert not marker.exists()
    why = {"pickle": "GLOBAL", "target": "builtins.open", "interpolation": "backbone.num_features",
           "chain": "backbone.num_features"}[kind]  # fmt: skip
    assert why in str(error.value) and str(ckpt) in str(error.value)
    assert "\n" not in str(error.value)


def test_resume_from_a_malicious_pickle_runs_nothing(tmp_path):
    ckpt, marker = malicious_pickle(tmp_path)
    data = tmp_path / "data"
    for person in range(2):
        images(data / f"id{person}", 3)
    command = [
        sys.executable, str(ROOT / "train.py"), "data=folder", f"data.root={data}", "~data.val",
        "data.num_workers=0", f"paths.output_dir={tmp_path / 'runs'}", "trainer.device=cpu",
        f"trainer.resume={ckpt}",
    ]  # fmt: skip
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert not marker.exists()
    last = result.stderr.strip().splitlines()[-1]
    assert "refused" in last and str(ckpt) in last and "Traceback" not in result.stderr


@pytest.mark.parametrize("threshold", [4.0, 3.9, 2.0, 0.0, -1.0, 12.5, float("nan"), float("inf")])
def test_a_threshold_file_outside_the_distance_range_is_refused(threshold, tmp_path):
    ckpt = tmp_path / "model.pt"
    record = {"threshold": threshold, "set": "x", "accuracy": 0.9, "step": 1}
    inference.threshold_path(ckpt).write_text(json.dumps(record))
    with pytest.raises(ValueError, match="outside"):
        inference.load_threshold(ckpt)


def test_a_plausible_threshold_file_is_read(tmp_path):
    ckpt = tmp_path / "model.pt"
    inference.threshold_path(ckpt).write_text(json.dumps({"threshold": 1.21, "step": 3}))
    assert inference.load_threshold(ckpt)["threshold"] == 1.21


def test_a_timm_backbone_config_cannot_make_timm_load_a_file(tmp_path):
    """The backbone _target_ is allowed, but its options must not point timm at a (hostile)
    weights file: refused before timm opens it."""
    evil, marker = malicious_pickle(tmp_path)
    backbone = {"_target_": "facerec.backbones.timm.TimmBackbone", "model_name": "resnet10t",
                "checkpoint_path": str(evil)}  # fmt: skip
    embedding = {"_target_": "facerec.embedding.Embedding"}
    ckpt = tmp_path / "timm.pt"
    torch.save({"model": {}, "step": 1, "config": {"backbone": backbone, "embedding": embedding}},
               ckpt)  # fmt: skip
    with pytest.raises(ValueError, match="checkpoint_path"):
        inference.load_model(ckpt, "cpu")
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------
# saved configs are plain data: never resolved, never instantiated (a real, loadable model)

TINY = {
    "backbone": {"_target_": MOBILE, "num_features": 16},
    "embedding": {"_target_": EMBEDDING, "embedding_size": 8},
    "data": {"image_size": 112, "center_crop": None},
}


def tiny_checkpoint(path: Path, **sections) -> Path:
    """A loadable checkpoint of a tiny model; ``sections`` replace parts of its config. The
    weights come from Hydra's build of the trusted TINY config, not from the loader under test."""
    from facerec.model import build_face_model

    torch.manual_seed(0)
    config = {**copy.deepcopy(TINY), **sections}
    state = build_face_model(TINY).state_dict()
    torch.save({"model": state, "step": 1, "config": config, "classes": ["a", "b"]}, path)
    return path


def one_line_refusal(err: str, *names: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(name in lines[0] for name in names), (names, lines[0])
    return lines[0]


def test_a_tiny_checkpoint_is_a_real_model(tmp_path):
    """The crafted files below differ from a loadable one only in the hostile part."""
    ckpt = tiny_checkpoint(tmp_path / "ok.pt")
    model, _, meta = inference.load_model(ckpt, "cpu")
    assert meta["backbone"] == MOBILE
    assert model(torch.zeros(2, 3, 112, 112, dtype=torch.uint8)).shape == (2, 8)


def test_a_folder_config_with_oc_create_is_refused_and_nothing_runs(tmp_path, capsys):
    """``${oc.create:[{_target_: ...}]}`` in config.json: Hydra would resolve it into a new
    _target_ node after the allow-list check, and build it."""
    from facerec.inference import folder as pretrained

    folder = tmp_path / "folder"
    model, cfg, meta = inference.load_model(tiny_checkpoint(tmp_path / "ok.pt"), "cpu")
    pretrained.save_pretrained(model, cfg, folder, meta=meta)
    marker = tmp_path / "pwned-by-oc-create"
    config = json.loads((folder / "config.json").read_text())
    config["embedding"]["dropout"] = (
        f"${{oc.create:[{{_target_: builtins.open, file: {marker}, mode: w}}]}}"
    )
    (folder / "config.json").write_text(json.dumps(config))
    a, b = images(tmp_path / "faces")
    code = importlib.import_module("facerec.cli.verify").main(
        [str(folder), str(a), str(b), "--threshold", "1"]
    )
    assert code == 2 and not marker.exists()
    line = one_line_refusal(capsys.readouterr().err, str(folder / "config.json"), "refused")
    assert "embedding.dropout" in line and "interpolations are never resolved" in line


@pytest.mark.parametrize(
    ("section", "key", "value", "why"),
    [
        ("embedding", "embedding_size", 4e6, "not an integer"),
        ("embedding", "embedding_size", 4_000_000, "outside 1..65536"),
        ("embedding", "dropout", float("nan"), "not a finite number"),
        ("embedding", "freeze_scale", "yes", "not true/false"),
        ("embedding", "act", "relu", "not an option here"),
        ("backbone", "num_features", True, "not an integer"),
        ("data", "image_size", 20000, "outside 16..1024"),
        ("data", "center_crop", "${data.image_size}", "not an integer"),
    ],
)
def test_a_saved_value_of_the_wrong_type_or_size_is_refused_before_building(
    section, key, value, why, tmp_path
):
    """A legitimate file never meets these limits; a hostile size is refused in one line
    naming the file and the key before any tensor is allocated."""
    ckpt = tiny_checkpoint(tmp_path / "bad.pt", **{section: {**TINY[section], key: value}})
    with pytest.raises(ValueError) as error:
        inference.load_model(ckpt, "cpu")
    message = str(error.value)
    assert "\n" not in message and str(ckpt) in message and "refused" in message
    assert f"{section}.{key}" in message and why in message


def test_evaluate_without_sets_refuses_a_foreign_target_in_data_val(tmp_path, capsys):
    marker = tmp_path / "pwned-by-val"
    val = {"lfw": {"_target_": "builtins.open", "file": str(marker), "mode": "w"}}
    ckpt = tiny_checkpoint(tmp_path / "val.pt", data={**TINY["data"], "val": val})
    code = importlib.import_module("facerec.cli.evaluate").main([str(ckpt), "--device", "cpu"])
    assert code == 2 and not marker.exists()
    one_line_refusal(capsys.readouterr().err, str(ckpt), "refused", "data.val.lfw._target_",
                     "builtins.open")  # fmt: skip


@pytest.mark.parametrize(
    ("node", "named"),
    [
        ({"_target_": "facerec.data.PairsSet", "pairs_file": ["a"], "image_root": "x"},
         "data.val.lfw.pairs_file"),
        ({"_target_": "facerec.data.PairsSet", "pairs_file": "p", "image_root": "x",
          "loader": {"_target_": "os.system"}}, "data.val.lfw.loader"),
        ({"bin_file": "x.bin", "center_crop": "${data.center_crop}"}, "data.val.lfw.center_crop"),
    ],
)  # fmt: skip
def test_evaluate_without_sets_reads_data_val_as_plain_paths(node, named, tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "val.pt", data={**TINY["data"], "val": {"lfw": node}})
    assert importlib.import_module("facerec.cli.evaluate").main([str(ckpt)]) == 2
    one_line_refusal(capsys.readouterr().err, str(ckpt), "refused", named)


def test_evaluate_without_sets_builds_facerec_sets_from_the_paths(tmp_path):
    from facerec.cli.evaluate import saved_sets
    from facerec.data import PairsSet
    from facerec.data.binpack import BinSet

    val = {
        "lfw": {"_target_": "facerec.data.PairsSet", "pairs_file": "p.txt", "image_root": "img",
                "center_crop": 150, "image_size": 112},
        "cfp": {"bin_file": "cfp.bin"},
    }  # fmt: skip
    sets = saved_sets({"data": {"val": val}}, Preprocessing(112, 150), tmp_path / "m.pt", None)
    lfw, cfp = sets["lfw"][0], sets["cfp"][0]
    assert type(lfw) is PairsSet and type(cfp) is BinSet
    assert (str(lfw.pairs_file), str(lfw.image_root), lfw.center_crop) == ("p.txt", "img", 150)
    assert (str(cfp.bin_file), cfp.center_crop, cfp.image_size) == ("cfp.bin", None, 112)


def test_an_environment_secret_in_a_saved_config_is_not_exported(tmp_path, monkeypatch):
    """``${oc.env:NAME}`` stays that text: the exported config.json and card hold no secret."""
    from facerec.cli.export import main as export

    monkeypatch.setenv("FACEREC_TEST_SECRET", "hunter2-do-not-leak")
    secret = "${oc.env:FACEREC_TEST_SECRET}"
    head = {"_target_": "facerec.heads.arcface.ArcFace", "s": secret}
    data = {**TINY["data"], "root": secret}
    ckpt = tiny_checkpoint(tmp_path / "s.pt", name=secret, data=data, head=head)
    assert export([str(ckpt), "--out", str(tmp_path / "out")]) == 0
    for name in ("config.json", "README.md"):
        text = (tmp_path / "out" / name).read_text()
        assert "hunter2" not in text and "oc.env:FACEREC_TEST_SECRET" in text, name


def test_a_checkpoints_align_cache_is_not_where_evaluate_writes(tmp_path, monkeypatch, capsys):
    """data.align_cache names a folder: evaluate aligns into the user's cache instead."""
    import facerec.align.dataset

    written = []

    def record(image_root, paths, val, options, cache, *args):
        written.append(Path(cache))
        raise ValueError("stop after choosing the folder")

    monkeypatch.setattr(facerec.align.dataset, "align_training_data", record)
    monkeypatch.setenv("FACEREC_ALIGN_CACHE", str(tmp_path / "mine"))
    evil = tmp_path / "chosen-by-the-file"
    pairs = {"_target_": "facerec.data.PairsSet", "pairs_file": str(tmp_path / "p.txt"),
             "image_root": str(tmp_path / "faces")}  # fmt: skip
    data = {**TINY["data"], "align": {"select": "largest"}, "align_cache": str(evil),
            "val": {"lfw": pairs}}  # fmt: skip
    ckpt = tiny_checkpoint(tmp_path / "a.pt", data=data)
    evaluate = importlib.import_module("facerec.cli.evaluate").main
    assert evaluate([str(ckpt)]) == 2
    assert evaluate([str(ckpt), "--align-cache", str(tmp_path / "flag")]) == 2
    assert written == [tmp_path / "mine", tmp_path / "flag"] and not evil.exists()


def test_an_onnx_image_size_out_of_range_is_refused_in_one_line(tmp_path):
    """``facerec.image_size=20000`` in ONNX metadata: refused before any image is resized."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    for size, why in (("20000", "outside 16..1024"), ("1e9", "not an integer")):
        path = save_flatten_onnx(tmp_path / f"m{size}.onnx", {"facerec.image_size": size})
        with pytest.raises(ValueError) as error:
            inference.load_model(path, "cpu")
        message = str(error.value)
        assert "\n" not in message and str(path) in message and "facerec.image_size" in message
        assert why in message


def test_every_component_parameter_has_a_type_and_range():
    """A parameter a component declares can be read from a file only with a rule: a new one
    without its rule would make every file naming it unreadable."""
    from facerec.inference.components import components
    from facerec.inference.rules import RULES

    for group in ("backbone", "embedding"):
        for kind in components(group).values():
            assert set(kind.options) <= set(RULES), (kind.name, set(kind.options) - set(RULES))


@pytest.mark.parametrize("threshold", [3.9, 2.0])
def test_verify_refuses_a_threshold_file_that_accepts_most_impostors(threshold, tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "t.pt")
    inference.save_threshold(ckpt, "lfw", {"threshold": threshold, "accuracy": 0.99}, 1)
    a, b = images(tmp_path / "faces")
    assert importlib.import_module("facerec.cli.verify").main([str(ckpt), str(a), str(b)]) == 2
    line = one_line_refusal(capsys.readouterr().err, str(inference.threshold_path(ckpt)))
    assert f"threshold {threshold}" in line and "refused" in line and "0.99" not in line


def reference_set(folder: Path) -> Path:
    """An LFW-format pairs file of 10 same and 10 different pairs over 2 x 5 small images."""
    rng = np.random.default_rng(1)
    for person in ("Ann", "Bob"):
        (folder / person).mkdir(parents=True)
        for i in range(1, 6):
            image = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
            cv2.imwrite(str(folder / person / f"{person}_{i:04d}.jpg"), image)
    same = [f"Ann {i} {j}" for i, j in ((1, 2), (1, 3), (1, 4), (1, 5), (2, 3))]
    same += [f"Bob {i} {j}" for i, j in ((1, 2), (1, 3), (1, 4), (1, 5), (2, 3))]
    diff = [f"Ann {i} Bob {j}" for i in range(1, 6) for j in (1, 2)]
    pairs = folder / "pairs.txt"
    pairs.write_text("\n".join(["10", *same, *diff]) + "\n")
    return pairs


def test_verify_checks_a_threshold_on_a_reference_set(tmp_path, capsys):
    """Every squared distance of unit vectors is below 4: a threshold of 4 calls all of the
    reference's 10 different-person pairs the same person (refused); 0 calls none (kept)."""
    ckpt = tiny_checkpoint(tmp_path / "r.pt")
    pairs = reference_set(tmp_path / "ref")
    a, b = sorted((tmp_path / "ref" / "Ann").glob("*.jpg"))[:2]
    verify = importlib.import_module("facerec.cli.verify").main
    ref = ["--reference", f"ref={pairs}:{tmp_path / 'ref'}"]
    assert verify([str(ckpt), str(a), str(b), "--threshold", "4", *ref]) == 2
    line = one_line_refusal(capsys.readouterr().err, "refused", "--threshold, yours", "100.0%")
    assert "the reference set ref" in line
    assert verify([str(ckpt), str(a), str(b), "--threshold", "0", *ref]) == 0
    out = capsys.readouterr().out
    assert "0.0% of its different-person pairs" in out and "different people" in out


def test_impostor_accept_rate_counts_the_different_pairs_below_the_threshold():
    distances = np.array([0.5, 1.0, 1.5, 2.5, 0.2, 3.0])
    issame = np.array([False, False, False, False, True, True])
    assert inference.impostor_accept_rate(1.2, distances, issame) == 0.5  # 0.5 and 1.0 of 4
    with pytest.raises(ValueError, match=r"75.0%"):
        inference.check_threshold(2.0, "x", inference.impostor_accept_rate(2.0, distances, issame),
                                  "ref")  # fmt: skip
    inference.check_threshold(1.2, "x", 0.5, "ref")  # half is not "most"


def test_a_hostile_size_is_refused_under_a_one_gib_memory_cap(tmp_path):
    """``embedding_size=4e6`` behind 512 features is an 8 GB layer: with the address space
    capped at 1 GiB above what the interpreter holds, the load ends in the one-line refusal."""
    backbone = {**TINY["backbone"], "num_features": 512}
    embedding = {**TINY["embedding"], "embedding_size": 4_000_000}
    ckpt = tiny_checkpoint(tmp_path / "big.pt")
    state = torch.load(ckpt, weights_only=True)
    state["config"].update(backbone=backbone, embedding=embedding)
    torch.save(state, ckpt)
    script = (
        "import re, resource, sys\n"
        "from facerec.inference import loader as inference\n"
        "size = int(re.search(r'VmSize:\\s+(\\d+)', open('/proc/self/status').read())[1]) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (size + 2**30, resource.RLIM_INFINITY))\n"
        "try:\n"
        "    inference.load_model(sys.argv[1], 'cpu')\n"
        "except ValueError as error:\n"
        "    print(error)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, "-c", script, str(ckpt)], capture_output=True,
                            text=True, env=env, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "embedding.embedding_size: 4000000 is outside 1..65536" in result.stdout


def test_stored_alignment_options_of_the_hard_photo_search_are_read_and_checked():
    """``on_missing: auto``, ``crop_score`` and ``search`` round-trip; a foreign step is refused."""
    from facerec.align import AlignOptions

    options = AlignOptions(on_missing="auto", crop_score=0.7, search=("pad", "rotate"))
    stored = Preprocessing(alignment=options).to_dict()
    assert Preprocessing.from_dict(stored, "config.json").alignment == options
    stored["alignment"]["search"] = ["pad", "__import__('os')"]
    with pytest.raises(ValueError, match=r"config.json refused: .*search: .* is not a list of"):
        Preprocessing.from_dict(stored, "config.json")
