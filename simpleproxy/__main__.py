"""``python -m simpleproxy``: the same ``main()`` as the ``simpleproxy`` script and simpleproxy.py."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
