"""``python -m kongish_pdk``: the same as ``kongish-pluginserver``."""

from kongish_pdk.cli import main

raise SystemExit(main())
