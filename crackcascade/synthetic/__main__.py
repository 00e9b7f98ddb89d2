"""``python -m crackcascade.synthetic``: the same as ``crackcascade synthesize``."""

from crackcascade.synthetic.cli import main

raise SystemExit(main())
