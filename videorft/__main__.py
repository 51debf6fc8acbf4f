"""`python -m videorft ...`: the `videorft` command without the console script (a source tree not installed)."""
import sys

from videorft.cli import main

sys.exit(main())
