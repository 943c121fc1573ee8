import sys

from godrun.cli import main

sys.exit(main())
