import sys

from sensorstream.cli import main

sys.exit(main())
