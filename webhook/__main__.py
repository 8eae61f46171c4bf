"""``python -m webhook``: the same as the ``pod-replace-guard`` command."""

import sys

try:
    from webhook.cli import main
except KeyboardInterrupt:  # Ctrl-C while the modules load: as main would answer it
    sys.exit(130)

sys.exit(main())
