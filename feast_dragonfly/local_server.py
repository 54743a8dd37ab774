"""Throw-away local Redis-protocol servers for tests and demos.

The implementation lives in :mod:`feast_dragonfly.testing.local_server`; this name stays for
``python -m feast_dragonfly.local_server`` and for code that imports it from here.
"""

import sys

from feast_dragonfly.testing.local_server import *  # noqa: F403 - the public API, re-exported
from feast_dragonfly.testing.local_server import __all__ as __all__
from feast_dragonfly.testing.local_server import main

if __name__ == "__main__":
    sys.exit(main())
