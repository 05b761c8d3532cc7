import sys

from layerlens.cli import main

sys.exit(main())
