"""``python -m crackcascade.checkpoints IN OUT``: the same as ``crackcascade convert IN OUT``."""

from crackcascade.checkpoints.convert import main

raise SystemExit(main())
