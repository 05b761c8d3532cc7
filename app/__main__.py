"""``python -m app``: the ``layerlens`` command, as its console script runs it."""

import sys

from layerlens_client.cli import main

sys.exit(main())
