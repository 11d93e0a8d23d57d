import sys

from include.analytics.migrations import main

sys.exit(main())
