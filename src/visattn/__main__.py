"""``python -m visattn`` (and ``torchrun -m visattn``) runs the ``visattn`` command."""

import sys

from visattn.cli import main

sys.exit(main())
