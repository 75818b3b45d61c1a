"""Render benchmark results as Markdown, and put them between the markers of docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
CASE_TITLES = {
    "point": "Point SELECT by primary key",
    "range": "100-row SELECT",
    "insert": "Single-row INSERT (write grant)",
}


_STORES = {
    "sqlite": "SQLite, WAL, synchronous=FULL",
    "mariadb": "the shared MariaDB audit store, InnoDB, on the same private server",
}


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def _errors(result: dict[str, Any]) -> str:
    parts = [f"{k} x{v}" for k, v in sorted(result.get("non_200", {}).items())]
    if result.get("socket_errors"):
        parts.append(f"socket x{result['socket_errors']}")
    return ", ".join(parts) or "-"


def _split(result: dict[str, Any]) -> str:
    """The process's CPU per request: its main (event loop) thread, and the rest (the audit writer, ...)."""
    threads = result.get("thread_cpu_us") or {}
    if not threads:
        return ""
    loop = threads.get("main", 0)
    children = sum(v for k, v in threads.items() if k.startswith("child "))
    split = f"{loop} / {sum(threads.values()) - loop - children}"
    return f"{split} / child process {children}" if children else split


def _targets(results: list[dict[str, Any]], fsync_ms: float | None = None) -> list[str]:
    by = {(r["case"], r["clients"], r["app"]): r for r in results}
    lines = ["| check | case | result | target |", "|---|---|---|---|"]
    cases = list(dict.fromkeys(r["case"] for r in results))
    for case in cases:
        for clients in (16, 64):
            gw, base = by.get((case, clients, "gateway")), by.get((case, clients, "baseline"))
            if gw and base and base["rps"]:
                ratio = gw["rps"] / base["rps"]
                ok = "ok" if ratio >= 0.8 else "MISSED"  # noqa: PLR2004 - the issue's 0.8x target
                lines.append(f"| throughput vs baseline, {clients} clients | {case} | {ratio:.2f}x ({ok}) | >= 0.8x |")
                if gw.get("cpu_us") and base.get("cpu_us"):
                    cpu = gw["cpu_us"] / base["cpu_us"]
                    ok = "ok" if cpu <= 1.3 else "MISSED"  # noqa: PLR2004 - the issue's 1.3x target
                    lines.append(
                        f"| CPU per request vs baseline, {clients} clients | {case} | {cpu:.2f}x ({ok}) | <= 1.3x |"
                    )
        gw, base = by.get((case, 1, "gateway")), by.get((case, 1, "baseline"))
        if gw and base:
            overhead = (gw["p50_us"] - base["p50_us"]) / 1000
            if fsync_ms is None:
                ok = "ok" if overhead < 0.25 else "MISSED"  # noqa: PLR2004 - the issue's 0.25 ms target
                lines.append(f"| p50 overhead, 1 client | {case} | {overhead:+.3f} ms ({ok}) | < 0.25 ms |")
            else:  # issue 13: the baseline's p50 + one fsync of this disk (measured in the run) + 0.15 ms
                budget = fsync_ms + 0.15
                ok = "ok" if overhead <= budget else "MISSED"
                lines.append(
                    f"| p50 overhead, 1 client | {case} | {overhead:+.3f} ms ({ok}) | <= one fsync + 0.15 ms "
                    f"= {budget:.3f} ms |"
                )
        naive = [
            (r["clients"], r["app"], r["rps"])
            for r in results
            if r["case"] == case and r["app"] in ("naive", "naive-tls")
        ]
        behind = [
            f"{app}@{c}"
            for c, app, rps in naive
            if (gw_r := by.get((case, c, "gateway"))) is not None and gw_r["rps"] <= rps
        ]
        if naive:
            lines.append(
                f"| ahead of the naive app (plain and TLS), every client count | {case} | "
                f"{'ok' if not behind else 'behind at ' + ', '.join(behind)} | ahead everywhere |"
            )
        gw = by.get((case, 64, "gateway"))
        if gw and gw["p50_us"]:
            spread = gw["p99_us"] / gw["p50_us"]
            ok = "ok" if spread <= 3 else "MISSED"  # noqa: PLR2004 - the issue's p99/p50 <= 3 target
            lines.append(f"| gateway p99 / p50, 64 clients | {case} | {spread:.2f} ({ok}) | <= 3 |")
        gw = by.get((case, 256, "gateway"))
        if gw:
            bad = {k: v for k, v in gw.get("non_200", {}).items() if not k.endswith(":pool_exhausted")}
            verdict = "ok" if not bad and not gw.get("socket_errors") else f"unexpected: {_errors(gw)}"
            lines.append(f"| gateway errors, 256 clients, pool of 10 | {case} | {_errors(gw)} ({verdict}) | "
                         "only pool_exhausted |")  # fmt: skip
    return lines


def render(meta: dict[str, Any], results: list[dict[str, Any]]) -> str:
    """The whole generated section: machine, targets, one table per case."""
    machine = meta["machine"]
    lines = [
        (
            f"Run {meta['started']}, {meta['minutes']} min, {meta['duration_s']:g} s per cell, wrk closed loop "
            f"(1 thread), pool of {meta['pool_size']} for the gateway and the baseline."
        ),
        "",
        (
            f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, Linux "
            f"{machine['kernel']}, Python {machine['python']}, MariaDB {machine['mariadb']}, {machine['wrk']}. "
            f"Load average before {meta['load_before']}, after {meta['load_after']}."
        ),
    ]
    if meta.get("note"):
        lines += ["", f"**{meta['note']}**"]
    lines += [
        "",
        (
            f"Audit records written by the gateway during the run: {meta['audit_records']} "
            f"({_STORES[meta.get('audit_store', 'sqlite')]}). "
            f"Gateway RSS: {meta['rss_start_kb'].get('gateway', 0) // 1024} MiB "
            f"before the measured runs, {meta['rss_end_kb'].get('gateway', 0) // 1024} MiB after."
            + (
                f" The disk's fsync (4 KiB append + fsync, median of 200, after the load): {meta['fsync_ms']:.3f} ms."
                if meta.get("fsync_ms") is not None
                else ""
            )
        ),
        "",
        "### Targets",
        "",
        *_targets(results, meta.get("fsync_ms")),
    ]
    by = {(r["case"], r["clients"], r["app"]): r for r in results}
    for case in dict.fromkeys(r["case"] for r in results):
        lines += [
            "",
            f"### {CASE_TITLES.get(case, case)}",
            "",
            (
                "| clients | app | req/s | p50 ms | p99 ms | gateway / baseline | CPU µs / request "
                "| of which loop / other threads (/ child process) | MariaDB CPU µs / request | non-200 |"
            ),
            "|---:|---|---:|---:|---:|---:|---:|---|---:|---|",
        ]
        for r in (r for r in results if r["case"] == case):
            ratio = ""
            base = by.get((case, r["clients"], "baseline"))
            if r["app"] == "gateway" and base and base["rps"]:
                ratio = f"{r['rps'] / base['rps']:.2f}x"
            cpu = f"{r['cpu_us']:.0f}" if "cpu_us" in r else ""
            db = f"{r['db_cpu_us']:.0f}" if "db_cpu_us" in r else ""
            lines.append(
                f"| {r['clients']} | {r['app']} | {r['rps']:.0f} | {_ms(r['p50_us'])} | {_ms(r['p99_us'])} | "
                f"{ratio} | {cpu} | {_split(r)} | {db} | {_errors(r)} |"
            )
    return "\n".join(lines) + "\n"


def write_doc(path: Path, table: str) -> None:
    """Replace the generated section of ``path`` (created with just the markers if absent)."""
    text = path.read_text(encoding="utf-8") if path.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{head}{BEGIN}\n{table}{END}{tail}", encoding="utf-8")
