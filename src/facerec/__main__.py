"""``python -m facerec <command>``: the same as the ``facerec`` console script."""

import sys

from facerec.commands import main

sys.exit(main())
