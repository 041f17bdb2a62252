"""facerec as a package: the ``facerec`` command and its help, and a built wheel (configs
inside, no editable checkout) training from another folder. Nothing is downloaded: the wheel is
built with the installed setuptools and installed with ``--no-deps --no-index`` into a folder
put first on PYTHONPATH, so the dependencies are the test environment's own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from facerec.cli.commands import BENCHMARKS, COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def available(module_function: str) -> bool:
    import importlib.util

    module = module_function.split(":")[0]
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


TOOL_COMMANDS = [name for name in COMMANDS if name not in ("train", "bench")]


@pytest.mark.parametrize("name", TOOL_COMMANDS)
def test_every_subcommand_has_help(name, capsys):
    if not available(COMMANDS[name][0]):  # align, before facerec.align lands
        assert main([name, "--help"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "not available in this installation" in err[0]
        return
    with pytest.raises(SystemExit) as stop:
        main([name, "--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and out.startswith(f"usage: facerec {name}")


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_every_benchmark_has_help(name, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["bench", name, "--help"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith(
        f"usage: facerec bench {name}"
    )


def test_the_command_lists_every_command_and_refuses_an_unknown_one(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name}" in out for name in COMMANDS)
    assert main(["bench", "--help"]) == 0 and "heads" in capsys.readouterr().out
    assert main(["trian"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown command 'trian'" in err[0] and "train" in err[0]
    assert main([]) == 2  # no command: the usage, and a failure status
    argv = list(sys.argv)
    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    assert sys.argv == argv  # the caller's command line is left as it was


def test_train_help_and_python_m_facerec(tmp_path):
    """``python -m facerec train --help`` is Hydra's help (a subprocess: Hydra owns argv)."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    run = subprocess.run([sys.executable, "-m", "facerec", "train", "--help"], cwd=tmp_path,
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "== Config ==" in run.stdout or "Override anything" in run.stdout
    assert "head: arcface" in run.stdout or "head" in run.stdout


# ----------------------------------------------------------------------------------------------
# the wheel


def build_wheel(tmp: Path) -> Path:
    """The wheel of a clean copy of the checkout (the build leaves nothing in the checkout)."""
    source = tmp / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
               "--no-index", "-q", "-w", str(tmp / "dist"), str(source)]  # fmt: skip
    build = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (tmp / "dist").glob("facerec-*.whl")
    return wheel


def test_the_wheel_installs_and_trains_outside_the_checkout(lfw_root, tiny_pairs, tmp_path):
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "facerec/configs/train.yaml" in names and "facerec/configs/head/arcface.yaml" in names
    page = {f"facerec/serve/static/{f}" for f in ("index.html", "app.js", "style.css")}
    assert page <= set(names)  # facerec serve's page ships in the wheel
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert (
        "facerec = facerec.cli.commands:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    )

    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
         str(site), str(wheel)], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr

    elsewhere = tmp_path / "elsewhere"  # no configs/, no train.py, no src/ here
    (elsewhere / "my_configs" / "head").mkdir(parents=True)
    # A user's own choice, added without touching the package.
    (elsewhere / "my_configs" / "head" / "small_cosface.yaml").write_text(
        "_target_: facerec.heads.cosface.CosFace\ns: 16.0\nm: 0.2\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "NO_ALBUMENTATIONS_UPDATE": "1",
           "OMP_NUM_THREADS": "2"}  # fmt: skip
    env.pop("FACEREC_OUTPUT_DIR", None)
    where = subprocess.run([sys.executable, "-c", "import facerec; print(facerec.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True)  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr

    overrides = [
        "--config-dir", "my_configs", "head=small_cosface", "head.s=20",
        f"data.root={lfw_root}", "data.min_images=20", "data.batch_size=8",
        "data.num_workers=0", f"data.val.lfw_devtest.pairs_file={tiny_pairs}",
        "trainer.device=cpu", "trainer.max_steps=2", "trainer.progress=false",
        "trainer.eval_batch_size=16", "name=wheel",
    ]  # fmt: skip
    command = [str(site / "bin" / "facerec"), "train", *overrides]
    run = subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    (metrics_file,) = (elsewhere / "runs" / "wheel").glob("*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert metrics["step"] == 2
    config = (metrics_file.parent / "config.yaml").read_text()
    assert "facerec.heads.cosface.CosFace" in config and "s: 20" in config
