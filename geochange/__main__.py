"""``python -m geochange`` runs the command line."""

from geochange.cli import main

raise SystemExit(main())
