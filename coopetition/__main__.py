import sys

from coopetition.cli import main

sys.exit(main())
