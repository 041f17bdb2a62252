"""The command-line tools behind ``facerec <command>``: one module per tool, each with
``main(argv=None)`` (``argparse``; ``--help`` imports nothing heavy). :mod:`facerec.commands`
lists them; ``scripts/<name>.py`` in a checkout call the same ``main``."""
