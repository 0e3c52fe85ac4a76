"""The query of a postgresql+asyncpg URL: the keys asyncpg takes there, and what to write for libpq's.

SQLAlchemy's asyncpg dialect hands every query key to `asyncpg.connect()` as a keyword, as text. A key asyncpg
does not take (libpq's `sslmode`, common in hosted PostgreSQL URLs) fails every connect with a TypeError, so the
daemon would retry its migration forever; `timeout` and asyncpg's statement cache sizes want numbers and fail too.
"""

from __future__ import annotations

from collections.abc import Mapping

ASYNCPG_URL_KEYS = frozenset(
    {"host", "port", "user", "password", "passfile", "service", "servicefile", "database", "ssl", "direct_tls"}
    | {"command_timeout", "target_session_attrs", "krbsrvname", "gsslib", "prepared_statement_cache_size"}
)
NUMBERS_ONLY = ("timeout", "statement_cache_size", "max_cached_statement_lifetime", "max_cacheable_statement_size")
INSTEAD = {
    "sslmode": "sslmode is libpq's; asyncpg takes ssl= with the same modes (e.g. ?ssl=require)",
    "connect_timeout": "connect_timeout is libpq's; asyncpg's connect timeout cannot be set in the URL",
    **{
        key: f"{key} is libpq's; asyncpg reads it from the environment: set PG{key.upper()} instead"
        for key in ("sslrootcert", "sslcert", "sslkey", "sslcrl")
    },
    **{key: f"{key} is asyncpg's but must be a number, and a URL gives text" for key in NUMBERS_ONLY},
}


def asyncpg_query_problem(query: Mapping[str, object]) -> str | None:
    """What is wrong with the first query key asyncpg cannot take from a URL, saying what to write instead; the
    values are never echoed (`password=` may be one of them)."""
    for key in query:
        if key in ASYNCPG_URL_KEYS:
            continue
        return INSTEAD.get(key) or (
            f"{key[:40]!r} is not a parameter asyncpg takes in the URL; it takes {', '.join(sorted(ASYNCPG_URL_KEYS))}"
        )
    return None
