"""facerec's Hydra configs (``pkg://facerec/configs``): train.yaml + one folder per group."""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent  # shipped inside the package
