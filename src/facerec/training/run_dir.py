"""Where a run lives: ``<paths.output_dir>/<name>/<timestamp>``, agreed by every rank; the
checkpoint a resumed run continues from, checked to be the same run; and the lock that keeps a
second process out of a directory while one trains in it."""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from facerec import distributed
from facerec.files import checkpoint

__all__ = [
    "RunLock",
    "check_same_run",
    "create_run_dir",
    "open_run_dir",
    "resolve_run_dir",
    "run_dir_of",
    "run_root",
    "target_name",
]

log = logging.getLogger("facerec")


def target_name(node: DictConfig) -> str:
    """``facerec.heads.arcface.ArcFace`` -> ``arcface``: a short label for a config choice."""
    return str(node.get("_target_", "x")).rsplit(".", 1)[-1].lower()


def run_root(cfg: DictConfig) -> Path:
    """``<paths.output_dir>/<name>``: the folder that holds every run of this name."""
    name = cfg.name or f"{target_name(cfg.backbone)}-{target_name(cfg.head)}"
    return Path(cfg.paths.output_dir) / name


def resolve_run_dir(cfg: DictConfig) -> tuple[Path | None, tuple[Path, dict[str, Any]] | None]:
    """The run directory a resumed run continues in (None for a new run: see
    :func:`create_run_dir`) and the checkpoint to resume from, if any."""
    root = run_root(cfg)
    resume = cfg.trainer.resume
    found = None
    if resume == "auto":
        found = checkpoint.load_latest(root)
        if found is None:
            log.info("trainer.resume=auto: no checkpoint under %s, starting a new run", root)
    elif resume:
        found = Path(resume), read_resume(Path(resume))
    # A new run, or a loose checkpoint (downloaded, copied) continued in a run folder of its
    # own under paths.output_dir/name, never beside the file.
    return (run_dir_of(found[0]) if found is not None else None), found


def read_resume(path: Path) -> dict[str, Any]:
    """The checkpoint ``trainer.resume=`` names, or one line naming the key.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a folder (an exported model is ``trainer.init_from``), or a file that is not
            a readable facerec checkpoint.
    """
    if path.is_dir():
        raise ValueError(
            f"trainer.resume={path} is a folder: resume continues a run from one of its"
            " checkpoint files (<run>/checkpoints/last.pt) or takes auto; to start a new run"
            f" from an exported model use trainer.init_from={path}"
        )
    try:
        return checkpoint.load(path)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"trainer.resume={path}: {error}") from None
    except ValueError as error:
        raise ValueError(f"trainer.resume={path}: {error}") from None


def create_run_dir(root: Path, env: distributed.Dist, stamp: str | None = None) -> Path:
    """Create a new run folder ``<root>/<timestamp>`` and return it (the same on every rank).

    Rank 0 creates it with an atomic ``mkdir`` that fails when the folder exists, so two runs
    started in the same second each get a folder of their own (``<timestamp>+1`` ...) instead
    of both picking the free name and the second finding it in use. One timestamp for all
    ranks: rank 0's, broadcast (a per-rank ``${now:}`` would give one folder per process).

    Args:
        root: :func:`run_root`.
        stamp: the folder's name (default: the time, ``%Y%m%d-%H%M%S``).
    """
    run_dir = None
    if env.is_main:
        root.mkdir(parents=True, exist_ok=True)
        stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
        for suffix in itertools.count():
            candidate = root / (f"{stamp}+{suffix}" if suffix else stamp)
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            run_dir = candidate
            break
    return Path(distributed.broadcast(str(run_dir)))


def run_dir_of(path: Path) -> Path | None:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/<file>`` beside
    ``<run>/config.yaml``), or None for a checkpoint outside a run folder."""
    folder = path.parent
    if folder.name == "checkpoints" and (folder.parent / "config.yaml").is_file():
        return folder.parent
    return None


# What makes a run the run it is: resuming with another value is another experiment. (Another
# backbone or embedding is refused by the weights themselves, which do not fit.) trainer.ema:
# the checkpoint's `model` is the average or the raw weights depending on it, and an average
# continued with another decay is neither run's.
SAME_RUN = ("head", "criterion", "sampler", "optim._target_", "sched._target_", "trainer.ema")


def leaves(node: Any, prefix: str) -> dict[str, Any]:
    """``{"head.m": 0.5, ...}``: the leaf values of a nested config under ``prefix``."""
    if not isinstance(node, Mapping):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(leaves(value, f"{prefix}.{key}"))
    return out


def pick(config: Mapping[str, Any], key: str) -> Any:
    """``config["optim"]["_target_"]`` for ``key="optim._target_"``; None where absent."""
    node: Any = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def check_same_run(saved: Mapping[str, Any] | None, cfg: DictConfig, path: Path) -> None:
    """Refuse to resume checkpoint ``path`` with another head (or its hyper-parameters),
    criterion, optimizer or schedule, saying what differs.

    Sections a checkpoint does not have (written by an older facerec) are not compared.

    Raises:
        ValueError: naming the file and the first differing keys.
    """
    current = OmegaConf.to_container(cfg, resolve=True)
    differences = []
    for key in SAME_RUN:
        if pick(saved or {}, key) is None:
            continue
        old, new = leaves(pick(saved, key), key), leaves(pick(current, key), key)
        for name in sorted(old.keys() | new.keys()):
            if old.get(name) != new.get(name):
                differences.append(f"{name}: {old.get(name)!r} there, {new.get(name)!r} here")
    if differences:
        raise ValueError(
            f"checkpoint {path} is another run ({'; '.join(differences[:4])}"
            f"{' ...' if len(differences) > 4 else ''}): resume continues the same run; start"
            " a new one with trainer.resume=null"
        )


class RunLock:
    """An exclusive lock on a run directory while this process trains in it.

    ``flock`` on ``<run>/.lock``: the kernel drops it when the holder exits, SIGKILL included,
    so a stale lock of a killed process is taken over by the next run with no clean-up step.
    The file names the holder (pid, host, start time) for the refusal message.

    Raises:
        ValueError: another live process holds the lock.
    """

    NAME = ".lock"

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / self.NAME
        self.file = open(self.path, "a+")  # noqa: SIM115 - held open for the whole run
        self.locked = False
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.locked = True
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise ValueError(
                f"run directory {run_dir} is in use: {holder} is training in it; wait for it to"
                " end (or stop it) before resuming, or train under another name="
            ) from None
        except OSError as error:  # a filesystem without locks (some NFS mounts)
            log.warning(
                "cannot lock %s (%s): a second process would not be refused", self.path, error
            )
        self.file.seek(0)
        self.file.truncate()
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        self.file.write(f"pid {os.getpid()} on {socket.gethostname()} since {since}\n")
        self.file.flush()

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        if self.locked:  # not on a filesystem without locks: unlocking would fail there too
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.locked = False
        if not self.file.closed:
            self.file.close()


def open_run_dir(cfg: DictConfig, run_dir: Path, step: int) -> RunLock:
    """Create and lock the run directory, clear partial checkpoints, write the config.

    Raises:
        ValueError: another process trains in this directory.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir)
    checkpoint.remove_leftovers(run_dir / "checkpoints")
    # The resolved config of this invocation; a resumed run keeps the original beside it.
    first = not (run_dir / "config.yaml").is_file()
    name = "config.yaml" if first else f"config.resume-{step}.yaml"
    (run_dir / name).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return lock
