"""``python -m facerec <command>``: the same as the ``facerec`` console script."""

import sys

from facerec.cli.commands import main

sys.exit(main())
