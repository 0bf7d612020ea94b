"""``python -m cli``: the same as the ``handson`` command."""

import sys

from cli import main

sys.exit(main())
