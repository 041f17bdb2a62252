"""The training command line checked before Hydra runs it: a bad override is one readable line.

Hydra already lists the valid options of a config group (``head=foo``); for a key that does
not exist (``head.sm=32``) it only says "not in struct", so the overrides are checked first
against the composed config and the message names the keys that do exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from facerec.cli.errors import UsageError, composition_message, one_line
from facerec.configs import CONFIG_DIR

# Hydra flags that take a value: their value is not an override.
_FLAGS_WITH_VALUE = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--info",
    "-i",
    "--experimental-rerun",
}


def overrides_of(argv: Sequence[str]) -> list[str]:
    """The ``key=value`` overrides in a Hydra command line."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in _FLAGS_WITH_VALUE
        else:
            out.append(arg)
    return out


def unknown_key_message(cfg: DictConfig, key: str) -> str | None:
    """Says which keys exist next to ``key`` when ``key`` is not in ``cfg``; None if it is."""
    # Plain containers: a mandatory value still unset (``???``, e.g. data.root) is a key that
    # exists, which `in` on a DictConfig denies.
    node: object = OmegaConf.to_container(cfg, resolve=False)
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:depth]) or "the root config"
            valid = ", ".join(sorted(node)) if isinstance(node, dict) else "(a value)"
            return (
                f"unknown config key '{key}': {where} has {valid}."
                f" To add a new key on purpose use '+{key}=...'."
            )
        node = node[part]
    return None


def flag_value(argv: Sequence[str], *names: str) -> str | None:
    """The value of the last ``--flag VALUE`` / ``--flag=VALUE`` among ``names`` in ``argv``."""
    value = None
    for i, arg in enumerate(argv):
        name, sep, rest = arg.partition("=")
        if name in names:
            value = rest if sep else (argv[i + 1] if i + 1 < len(argv) else None)
    return value


def search_path_overrides(argv: Sequence[str]) -> list[str]:
    """Hydra's ``--config-dir DIR`` as the ``hydra.searchpath`` override the compose API takes.

    ``@hydra.main`` adds that folder after the package's configs; composing the same way here
    lets the check accept the choices it adds (``head=my_head``).

    Raises:
        UsageError: the folder does not exist.
    """
    config_dir = flag_value(argv, "--config-dir", "-cd")
    if config_dir is None or any(o.startswith("hydra.searchpath=") for o in overrides_of(argv)):
        return []
    path = Path(config_dir).resolve()
    if not path.is_dir():
        raise UsageError(f"--config-dir {config_dir}: no such folder")
    return [f"hydra.searchpath=[file://{path}]"]


MULTIRUN_FLAGS = ("-m", "--multirun")


def is_multirun(argv: Sequence[str]) -> bool:
    """``-m`` / ``--multirun`` (or ``hydra.mode=MULTIRUN``): Hydra runs one job per combination."""
    return any(arg in MULTIRUN_FLAGS for arg in argv) or "hydra.mode=MULTIRUN" in overrides_of(argv)


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """Each job's overrides of a sweep, expanded as Hydra's basic sweeper expands them.

    ``["head=arcface,cosface", "seed=1,2"]`` -> four lists (``head=arcface seed=1`` ...). With
    another sweeper (``hydra/sweeper=...``, whose sweeps may be intervals) the sweep overrides are
    left to it and only the others are checked.

    Raises:
        UsageError: an override that does not parse (Hydra's message).
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        if any(o.startswith("hydra/sweeper=") for o in overrides):
            return [[o.input_line for o in parsed if not o.is_sweep_override()]]
        return BasicSweeper.split_arguments(parsed, None)[0]
    except HydraException as error:
        raise UsageError(one_line(str(error))) from None


def check_overrides(argv: Sequence[str], config_dir: Path = CONFIG_DIR) -> DictConfig:
    """Compose the config from ``argv`` and turn composition errors into a :class:`UsageError`.

    ``--config-dir`` and ``hydra.searchpath=[...]`` count: a user's folder adds choices. With
    ``-m`` every job of the sweep is composed (as Hydra does before it launches any) and its
    head's keys checked against the head's class, so a typo in a swept value or a scale given
    to a head without one stops the sweep before its first run, naming the job.

    Returns:
        The composed config (of the sweep's first job).
    """
    extra = search_path_overrides(argv)
    if not is_multirun(argv):
        return compose_checked(overrides_of(argv) + extra, config_dir)
    jobs = sweep_jobs(overrides_of(argv))
    swept = {o.split("=", 1)[0] for o in overrides_of(argv) if o not in jobs[0]}
    composed = []
    for job in jobs:
        try:
            composed.append(compose_checked(job + extra, config_dir))
            head_checked(composed[-1])
        except UsageError as error:
            label = " ".join(o for o in job if o.split("=", 1)[0] in swept)
            raise UsageError(f"sweep job {label}: {error}" if label else str(error)) from None
    return composed[0]


def head_checked(cfg: DictConfig) -> None:
    """The head's keys and ranges (as at start-up): a sweep over heads learns that one of them
    cannot be built before its first job trains, not after it loaded the data."""
    from facerec.training.ranges import check_head

    try:
        check_head(cfg.head)
    except ValueError as error:
        raise UsageError(str(error)) from None


def compose_checked(overrides: list[str], config_dir: Path) -> DictConfig:
    """Compose ``train`` with ``overrides``; an error names the key or choice to fix.

    Raises:
        UsageError: one line, naming the unknown key (and its siblings) or the missing option.
    """
    with initialize_config_dir(str(config_dir), version_base="1.3"):
        try:
            return compose("train", overrides=overrides)
        except HydraException as error:
            # Re-compose with only the group choices to find the key the user got wrong.
            choices = [o for o in overrides if "=" in o and "." not in o.split("=", 1)[0]]
            choices += [o for o in overrides if o.startswith("hydra.searchpath=")]
            try:
                base = compose("train", overrides=choices)
            except HydraException:
                raise UsageError(composition_message(error)) from None
            for override in overrides:
                key = override.split("=", 1)[0]
                if "=" in override and "." in key and not key.startswith(("+", "~", "hydra.")):
                    message = unknown_key_message(base, key)
                    if message:
                        raise UsageError(message) from None
            raise UsageError(composition_message(error)) from None
