"""`python -m resnet` (and `torchrun -m resnet`) runs the command line."""

import sys

from .cli import main

sys.exit(main())
