import sys

from leireye.cli import main

sys.exit(main())
