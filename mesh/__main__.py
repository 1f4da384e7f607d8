"""`python -m mesh` is the `llamamesh` command."""

import sys

from mesh.cli import main

sys.exit(main())
