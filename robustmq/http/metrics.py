"""`/metrics`: the broker's counters as Prometheus metrics, through prometheus-client.

The hot paths keep plain int counters (sessions, router, log, mq9); `BrokerCollector` reads them
only when Prometheus scrapes, so publishing never touches a prometheus-client object. Every
per-protocol figure is one sample per registered front-end, labelled `protocol`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
    SummaryMetricFamily,
)

from robustmq import __version__

if TYPE_CHECKING:
    from robustmq.server import Broker

# the classic text format; generate_latest writes it (newer clients call the type "1.0.0")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PROTOCOL = ["protocol"]


class BrokerCollector:
    """A prometheus-client custom collector over one Broker's own counters."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        yield from self._identity()
        yield from self._frontends()
        yield from self._routing()
        yield from self._log()
        yield from self._mq9()

    def _identity(self) -> Iterator[Metric]:
        b = self.broker
        yield InfoMetricFamily("robustmq", "Server identity.", value={
            "version": __version__, "server_id": b.nats.server_id,
            "server_name": b.cfg.server_name or b.nats.server_id})

    def _frontends(self) -> Iterator[Metric]:
        conns = GaugeMetricFamily("robustmq_connections", "Open client connections.", labels=PROTOCOL)
        accepted = CounterMetricFamily("robustmq_connections_total",
                                       "Client connections accepted since start.", labels=PROTOCOL)
        subs = GaugeMetricFamily("robustmq_subscriptions", "Live client subscriptions.", labels=PROTOCOL)
        msgs_in = CounterMetricFamily("robustmq_messages_in_total", "Messages published by clients.",
                                      labels=PROTOCOL)
        msgs_out = CounterMetricFamily("robustmq_messages_out_total", "Messages delivered to clients.",
                                       labels=PROTOCOL)
        bytes_in = CounterMetricFamily("robustmq_bytes_in_total",
                                       "Bytes received from clients (wire bytes).", labels=PROTOCOL)
        bytes_out = CounterMetricFamily("robustmq_bytes_out_total", "Bytes sent to clients (wire bytes).",
                                        labels=PROTOCOL)
        slow = CounterMetricFamily("robustmq_slow_consumers_total",
                                   "Connections closed because they did not read fast enough.",
                                   labels=PROTOCOL)
        stale = CounterMetricFamily("robustmq_stale_connections_total",
                                    "Connections closed for silence (no PONG to PINGs, MQTT keep-alive).",
                                    labels=PROTOCOL)
        for fe in self.broker.frontends:
            label = [fe.protocol]
            open_conns = list(fe.connections())
            mi, mo, bi, bo = fe.totals()
            conns.add_metric(label, len(open_conns))
            accepted.add_metric(label, fe.total_connections)
            subs.add_metric(label, sum(len(c.subs) for c in open_conns))
            msgs_in.add_metric(label, mi)
            msgs_out.add_metric(label, mo)
            bytes_in.add_metric(label, bi)
            bytes_out.add_metric(label, bo)
            slow.add_metric(label, fe.slow_consumers)
            stale.add_metric(label, fe.stale_connections)
        yield from (conns, accepted, subs, msgs_in, msgs_out, bytes_in, bytes_out, slow, stale)

    def _routing(self) -> Iterator[Metric]:
        b = self.broker
        yield CounterMetricFamily("robustmq_messages_no_subscribers_total",
                                  "Publishes that reached no live subscriber "
                                  "(still logged unless ephemeral).",
                                  value=b.router.stats.no_subscribers)
        dropped = CounterMetricFamily(
            "robustmq_dropped_messages_total",
            "Messages not stored: sent to a missing mailbox or refused by a full one "
            "(the backlog of a slow consumer is counted by robustmq_slow_consumers_total).",
            labels=["reason"])
        ms = b.mq9.stats if b.mq9 is not None else None
        dropped.add_metric(["mq9_no_mailbox"], ms.dropped_no_mailbox if ms else 0)
        dropped.add_metric(["mq9_mailbox_full"], ms.refused_full if ms else 0)
        yield dropped

    def _log(self) -> Iterator[Metric]:
        lg = self.broker.log
        st = lg.stats
        yield CounterMetricFamily("robustmq_log_appends_total", "Records appended to the log.",
                                  value=st.appends)
        yield CounterMetricFamily("robustmq_log_append_bytes_total", "Payload bytes appended to the log.",
                                  value=st.bytes_appended)
        yield CounterMetricFamily("robustmq_log_batches_total", "Write batches committed to the store.",
                                  value=st.batches)
        yield SummaryMetricFamily(
            "robustmq_log_commit_seconds",
            "Time to commit one write batch (what an acknowledged publish waits for).",
            count_value=st.batches, sum_value=float(st.commit_seconds_total))
        yield GaugeMetricFamily("robustmq_log_commit_seconds_max", "Longest batch commit since start.",
                                value=float(st.commit_seconds_max))
        yield GaugeMetricFamily("robustmq_log_streams", "Streams in the log.", value=len(lg.streams))
        yield CounterMetricFamily("robustmq_log_segments_dropped_total", "Segments removed by retention.",
                                  value=st.segments_dropped)

    def _mq9(self) -> Iterator[Metric]:
        mq9 = self.broker.mq9
        if mq9 is None:
            return
        ms = mq9.stats
        yield GaugeMetricFamily("robustmq_mq9_mailboxes", "Live mq9 mailboxes.", value=mq9.mailbox_count())
        yield CounterMetricFamily("robustmq_mq9_mailboxes_created_total", "mq9 mailboxes created.",
                                  value=ms.mailboxes_created)
        yield CounterMetricFamily("robustmq_mq9_mailboxes_expired_total",
                                  "mq9 mailboxes removed at the end of their TTL.",
                                  value=ms.mailboxes_expired)
        yield CounterMetricFamily("robustmq_mq9_messages_stored_total", "Messages stored in mailboxes.",
                                  value=ms.messages_stored)
        yield CounterMetricFamily("robustmq_mq9_messages_delivered_total",
                                  "Live mailbox messages delivered to subscribers.",
                                  value=ms.messages_delivered)
        yield CounterMetricFamily("robustmq_mq9_replays_total",
                                  "Subscriptions that replayed a mailbox's stored messages.",
                                  value=ms.replays)


def build_registry(broker: Broker) -> CollectorRegistry:
    """A private registry (not the process-global one): the broker's figures, process_*, python_info."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(broker))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
