"""Periodic work as data: (job, queue, interval in seconds or cron expression)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from rq.cron import CronScheduler
from rq.utils import now

from workers import jobs, queues


@dataclasses.dataclass(frozen=True)
class Periodic:
    func: Callable[[], object]
    queue: str
    interval: int | None = None
    cron: str | None = None
    timeout: int | None = None  # seconds; RQ's default (180) when None


PERIODIC: tuple[Periodic, ...] = (
    Periodic(jobs.heartbeat, queues.LOW, interval=60),
    Periodic(jobs.sweep_uploads, queues.LOW, interval=3600),
    Periodic(jobs.purge_ingest_counts, queues.LOW, cron="17 3 * * *"),
    Periodic(jobs.lifecycle_incremental, queues.DEFAULT, interval=60),
    Periodic(jobs.points_tick, queues.DEFAULT, interval=60),
    Periodic(jobs.journeys_tick, queues.HIGH, interval=60, timeout=jobs.TICK_TIMEOUT),
    Periodic(jobs.deliver_messages, queues.HIGH, interval=60),
    Periodic(jobs.webhooks_fan_out, queues.DEFAULT, interval=60),
    Periodic(jobs.deliver_webhooks, queues.HIGH, interval=60),
    # RQ's cron reads UTC: 18:30 UTC is 02:30 in China, the quietest hour of a shop.
    Periodic(jobs.lifecycle_full, queues.LOW, cron="30 18 * * *", timeout=jobs.FULL_RUN_TIMEOUT),
)


def register_all(scheduler: CronScheduler) -> None:
    for item in PERIODIC:
        scheduler.register(
            item.func,
            queue_name=item.queue,
            interval=item.interval,
            cron=item.cron,
            job_timeout=item.timeout,
            name=item.func.__name__,
        )


LEADER_KEY = "tenure:cron:leader"
# The scheduler sleeps at most 60 s between rounds; a lease of twice that survives one
# slow round, and a standby takes over within two minutes of the leader dying.
LEASE_SECONDS = 120

# Extend the lease only if it is still ours (atomically: no one can take it in between).
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('expire', KEYS[1], ARGV[2])
end
return redis.call('set', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) and 1 or 0
"""


class LeaderCronScheduler(CronScheduler):
    """RQ's cron scheduler, of which any number may run: only the one holding a lease in
    Redis enqueues, so periodic jobs never run twice per tick. The others keep time."""

    def enqueue_jobs(self):
        if self.is_leader():
            return super().enqueue_jobs()
        tick = now()
        for job in self._cron_jobs:
            if job.should_run():
                job.set_enqueue_time(tick)  # skip this tick: the leader has it
        return []

    def is_leader(self) -> bool:
        renewed = self.connection.eval(_RENEW, 1, LEADER_KEY, self.name, LEASE_SECONDS)
        return bool(renewed)

    def register_death(self, pipeline=None) -> None:
        release = "if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end"
        self.connection.eval(release, 1, LEADER_KEY, self.name)
        super().register_death(pipeline)
