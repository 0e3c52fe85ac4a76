"""Exit statuses that scripts and service managers act on (README, examples/leadhub.service)."""

CONFIG_ERROR = 2  # the configuration is invalid: nothing started
SCHEMA_NEWER = 3  # a newer leadhub migrated the database: starting this release again cannot help
NEEDS_UPGRADE = 4  # `leadhub db status`: the database is short of this release's schema; `leadhub db upgrade`
INTERRUPTED = 130  # Ctrl-C, and SIGTERM or SIGHUP where a command takes them as it (hub/stop_as_interrupt.py)
