"""Training: ``run(cfg)`` (:mod:`facerec.training.run`) builds a run from the config, then the
loop's plain functions (:mod:`~facerec.training.loop`, :mod:`~facerec.training.engine`), the run
folder, start-up checks, verification during training, reports and fine-tuning. Imports the
components and the inference side (to load an ``init_from`` model); nothing imports it but the
command line.
"""
