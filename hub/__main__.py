"""`python -m leadhub.hub` runs the CLI (the tests start the daemon this way)."""

from leadhub.hub.cli import main

main()
