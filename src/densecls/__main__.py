"""``python -m densecls``."""

from densecls.cli import main

main()
