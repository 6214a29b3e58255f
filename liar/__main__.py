import sys

from liar.cli import main

sys.exit(main())
