"""``python -m crackcascade``: the same as the ``crackcascade`` command."""

from crackcascade.cli import main

raise SystemExit(main())
