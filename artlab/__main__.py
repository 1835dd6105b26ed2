"""`python -m artlab` runs the command-line interface."""

from artlab.cli import main

raise SystemExit(main())
