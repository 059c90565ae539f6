"""``python -m fastsam.cli`` (e.g. under ``torchrun ... -m fastsam.cli train``)."""

import sys

from . import main

sys.exit(main())
