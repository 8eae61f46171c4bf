"""``python -m webhook``: the same as the ``pod-replace-guard`` command."""

import sys

from webhook.cli import main

sys.exit(main())
