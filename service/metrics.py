"""Prometheus metrics, read from the database and the broker at scrape time.

Jobs are moved by workers in other processes (and machines), so the API
counts from the shared state instead of keeping in-process counters.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from infra.db.models import JOB_STATES, AnalysisResult, Job
from infra.queue import INSPECT_QUEUE, JOBS_QUEUE
from service.context import ServiceContext

log = logging.getLogger("layerlens.api")
DURATION_BUCKETS_S = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)


class ServiceCollector(Collector):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[GaugeMetricFamily | HistogramMetricFamily]:
        jobs = GaugeMetricFamily("layerlens_jobs", "Jobs by state", labels=["state"])
        buckets = [func.sum(case((AnalysisResult.duration_s <= b, 1), else_=0))
                   for b in DURATION_BUCKETS_S]
        with self.ctx.sessions() as session:
            counts = {status: count for status, count in session.execute(
                select(Job.status, func.count()).group_by(Job.status))}
            durations = session.execute(
                select(AnalysisResult.kind, func.count(), func.sum(AnalysisResult.duration_s),
                       *buckets).where(AnalysisResult.duration_s.is_not(None))
                .group_by(AnalysisResult.kind)).all()
        for status in JOB_STATES:
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs

        histogram = HistogramMetricFamily(
            "layerlens_analysis_duration_seconds",
            "Wall-clock time of each analysis of succeeded jobs", labels=["kind"])
        for kind, count, total, *cumulative in durations:
            pairs = [(str(float(b)), int(c or 0)) for b, c in zip(DURATION_BUCKETS_S, cumulative,
                                                                 strict=True)]
            histogram.add_metric([kind], [*pairs, ("+Inf", int(count))], sum_value=total or 0.0)
        yield histogram

        depth = GaugeMetricFamily("layerlens_queue_depth", "Messages waiting in a queue",
                                  labels=["queue"])
        for queue in (JOBS_QUEUE, INSPECT_QUEUE):
            try:
                depth.add_metric([queue], self.ctx.queue.depth(queue))
            except Exception as exc:  # the broker is down: report what we can
                log.warning("queue depth of %s unavailable: %s", queue, exc)
        yield depth
