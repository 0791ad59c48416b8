"""``python -m netmon``: the same as the ``netmon`` command."""

import sys

from netmon.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
