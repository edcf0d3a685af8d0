"""``python -m surrogate.serving`` = ``serve-surrogate``."""

import sys

from surrogate.serving.cli import main

sys.exit(main())
