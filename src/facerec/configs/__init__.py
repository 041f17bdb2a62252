"""facerec's Hydra configs (``pkg://facerec/configs``): train.yaml + one folder per group."""
