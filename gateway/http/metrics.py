"""Prometheus metrics, in a registry of the app's own (nothing global)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.audit.log import AuditLog
from gateway.db.driftstate import DriftState
from gateway.db.pools import ConnectionPool
from gateway.policy.store import PolicyStore


class _PoolCollector(Collector):
    def __init__(self, pools: Callable[[], dict[tuple[str, str], ConnectionPool]]) -> None:
        self._pools = pools

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        families = {
            "in_use": GaugeMetricFamily("gateway_pool_in_use", "Connections handed out", labels=["pool"]),
            "idle": GaugeMetricFamily("gateway_pool_idle", "Idle open connections", labels=["pool"]),
            "waiting": GaugeMetricFamily("gateway_pool_waiting", "Requests waiting", labels=["pool"]),
        }
        for pool in self._pools().values():
            families["in_use"].add_metric([pool.name], pool.in_use)
            families["idle"].add_metric([pool.name], pool.idle)
            families["waiting"].add_metric([pool.name], pool.waiting)
        yield from families.values()
        connects = CounterMetricFamily(
            "gateway_db_connects",
            "New database connections by result (ok, credential_error, auth_refused, cleartext_refused, ...)",
            labels=["pool", "result"],
        )
        for pool in self._pools().values():
            stats = pool.connect_stats
            for result, count in sorted(stats.results.items()) if stats else ():
                connects.add_metric([pool.name, result], count)
        yield connects


class _PolicyCollector(Collector):
    def __init__(self, store: PolicyStore) -> None:
        self._store = store

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        failed = GaugeMetricFamily(
            "gateway_policy_reload_failed",
            "1 while the policy files on disk are invalid (the last good policy stays in force)",
        )
        failed.add_metric([], 1.0 if self._store.last_error else 0.0)
        yield failed
        failures = CounterMetricFamily("gateway_policy_reload_failures", "Policy reloads refused since start-up")
        failures.add_metric([], float(self._store.reload_failures))
        yield failures
        unreadable = GaugeMetricFamily(
            "gateway_policy_source_unavailable",
            "1 while the shared state store cannot be read (edits refused; the last good policy stays in force)",
        )
        unreadable.add_metric([], 1.0 if self._store.source_error else 0.0)
        yield unreadable


class _AuditCollector(Collector):
    def __init__(self, audit: AuditLog, decisions: Mapping[tuple[str, str], int]) -> None:
        self._audit = audit
        self._decisions = decisions

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        decisions = CounterMetricFamily(
            "gateway_decisions",
            "Authorization decisions by result and code (401s included)",
            labels=["decision", "code"],
        )
        for (decision, code), count in sorted(self._decisions.items()):
            decisions.add_metric([decision, code], count)
        yield decisions
        stats = self._audit.stats
        records = CounterMetricFamily("gateway_audit_records", "Audit records committed")
        records.add_metric([], stats.records)
        yield records
        failures = CounterMetricFamily(
            "gateway_audit_write_failures",
            "Audit record writes the store refused (a queued outcome record retried counts per attempt)",
        )
        failures.add_metric([], stats.failed)
        yield failures
        pending = GaugeMetricFamily(
            "gateway_audit_pending", "Audit records queued or kept for a retry, not yet committed"
        )
        pending.add_metric([], self._audit.pending)
        yield pending


class _PrivilegeCollector(Collector):
    def __init__(self, state: DriftState) -> None:
        self._state = state

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        drift = GaugeMetricFamily(
            "gateway_db_privilege_drift",
            "Privileges the account holds beyond what the policies need (0: clean), from its last check",
            labels=["target", "db_user"],
        )
        failed = GaugeMetricFamily(
            "gateway_db_privilege_check_failed",
            "1 while the account's last privilege check could not run",
            labels=["target", "db_user"],
        )
        for (target, db_user), state in sorted(self._state.accounts().items()):
            if state.status in {"clean", "drift"}:
                drift.add_metric([target, db_user], len(state.excess))
            failed.add_metric([target, db_user], 1.0 if state.status == "error" else 0.0)
        yield drift
        yield failed


class Metrics:
    """The gateway's metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gateway_requests",
            "HTTP requests by route and outcome code",
            ["route", "code"],
            registry=self.registry,
        )
        # Observed by the audit writer thread once per group commit (not per record).
        self.audit_write = Histogram(
            "gateway_audit_write_seconds",
            "Time to durably commit one group of audit records",
            registry=self.registry,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
        )
        self.latency = Histogram(
            "gateway_request_seconds",
            "Request latency",
            ["route"],
            registry=self.registry,
            buckets=(
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
            ),
        )

    def watch_audit(self, audit: AuditLog, decisions: Mapping[tuple[str, str], int]) -> None:
        """Export decision counts and the audit log's records, failures and queue at scrape time."""
        self.registry.register(_AuditCollector(audit, decisions))

    def watch_pools(self, pools: Callable[[], dict[tuple[str, str], ConnectionPool]]) -> None:
        """Export pool gauges read from the live pools at scrape time."""
        self.registry.register(_PoolCollector(pools))

    def watch_privileges(self, state: DriftState) -> None:
        """Export each pool account's privilege drift and whether its check failed."""
        self.registry.register(_PrivilegeCollector(state))

    def watch_policies(self, store: PolicyStore) -> None:
        """Export whether the policy files on disk are invalid, and how often reloads failed."""
        self.registry.register(_PolicyCollector(store))
