"""Django's PostgreSQL backend, with a health check that asks the kernel before it asks the server (W2 7/7).

With CONN_HEALTH_CHECKS, Django runs `SELECT 1` before the first query of every request and every task on a
reused connection: a round trip that cost a `GET /health` or an API call as much client CPU as its own statement
(a third of `GET /health`'s CPU in process, on this project's 2-core machine); the prepared statements
(common.statements: the webhook's INSERT) had no check at all, and failed on a closed connection. A connection
PostgreSQL has closed — a restart, `pg_terminate_backend`, `idle_session_timeout` — has something to read: the
server's `FATAL` message and the end of the stream. So the check first polls the socket without waiting:
nothing to read on a connection libpq holds as good and idle means it is the live connection it was, and the
round trip is skipped. Anything else — something to read (a notice, a notification, the close), a transaction
left open, a connection libpq marks bad — gets Django's own check, which drops a dead connection and opens a new
one.

What neither check sees at once is a peer that vanished without closing (a host gone, a firewall's silent drop):
`SELECT 1` would then wait for TCP's timeout just as the request's own statement does.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base
from psycopg import pq


def quiet(connection) -> bool:
    """Is the psycopg `connection` good, idle (no transaction), and has the server sent nothing since its last
    answer? (One `poll()` with no timeout; False whenever in doubt.)"""
    try:
        pgconn = connection.pgconn
        if pgconn.status != pq.ConnStatus.OK or pgconn.transaction_status != pq.TransactionStatus.IDLE:
            return False
        poller = select.poll()
        poller.register(pgconn.socket, select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
    except Exception:  # a closed connection has no socket (psycopg.OperationalError): Django's check decides
        return False


class DatabaseWrapper(base.DatabaseWrapper):
    def close_if_health_check_failed(self) -> None:
        """Django's check, unless the connection is `quiet`: then it is taken as checked for this request (a
        pooled connection is not checked either way: Django leaves that to the pool)."""
        if (self.connection is not None and self.health_check_enabled and not self.health_check_done
                and quiet(self.connection)):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()
