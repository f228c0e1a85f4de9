import sys

from rtdecoder.cli import main

sys.exit(main())
