import sys

from rawmux.cli import main

sys.exit(main())
