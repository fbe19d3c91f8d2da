"""``python -m swiftlearn.train train|evaluate ...`` (see :mod:`swiftlearn.train.cli`)."""

import sys

from .cli import main

sys.exit(main())
