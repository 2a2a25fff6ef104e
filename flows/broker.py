"""The django-q2 Redis broker, with a dequeue that takes the waiting tasks in bulk.

django-q2's Redis broker pops one task per round trip (BLPOP). With a backlog, the
cluster's pusher then spends more CPU per run than the monitor and about a third of a
worker's share, on the same cores that accept webhooks. `LPOP key count` takes up to
Q_CLUSTER["bulk"] tasks in one round trip; an empty queue still blocks in BLPOP, so an
idle cluster wakes as soon as a task arrives. Tasks taken but not yet handed to a worker
are lost if the cluster dies, like those already in its task queue: their runs stay
`queued` in the ledger and the sweep enqueues them again.
"""

from __future__ import annotations

import redis
from django_q.brokers.redis_broker import Redis
from django_q.conf import Conf, logger


class BulkRedis(Redis):
    _bulk_supported = True  # LPOP with a count needs Redis 6.2

    def dequeue(self):
        if Conf.BULK > 1 and self._bulk_supported:
            try:
                tasks = self.connection.lpop(self.list_key, Conf.BULK)
            except redis.ResponseError:
                logger.warning("This Redis cannot pop several tasks at once (it needs 6.2); taking them one by one")
                BulkRedis._bulk_supported = False
            else:
                if tasks:
                    return [(None, task) for task in tasks]
        return super().dequeue()
