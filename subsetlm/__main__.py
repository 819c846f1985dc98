"""``python -m subsetlm`` == the ``subsetlm`` command."""

import sys

from subsetlm.cli import main

sys.exit(main())
