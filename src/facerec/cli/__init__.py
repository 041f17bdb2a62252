"""The ``facerec`` command line: the command table (:mod:`facerec.cli.commands`), the training
command (:mod:`facerec.cli.train`, Hydra), and one module per tool (``facerec <name>`` runs
``facerec.cli.<name>:main``). Commands import training and inference, never the reverse.
"""
