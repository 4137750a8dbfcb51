import sys

from ds_core.cli import main

sys.exit(main())
