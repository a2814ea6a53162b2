"""``python -m geochange.cli``: the same as the ``geochange`` command."""

import sys

from geochange.cli import main

sys.exit(main())
