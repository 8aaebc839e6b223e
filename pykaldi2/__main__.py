import sys

from pykaldi2.cli.main import main

sys.exit(main())
