"""`python -m caption`: the same as the `caption` command, Ctrl-C included (see caption.cli)."""
import sys

from .cli import main

sys.exit(main())
