"""Summarises SLA tracking per priority from leadflow's /metrics text (on stdin).

Columns: decisions timed, acknowledged (accepted or contacted), acknowledged within the SLA
window, breached (deadline or rejected), escalations routed to the priority, and decisions
still waiting for an acknowledgement before their deadline.
"""
import re
import sys

SLA_SECONDS = {"P0": 60, "P1": 300, "P2": 1800}
LINE = re.compile(r'^(\w+)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def main():
    totals = {}  # (metric, priority, extra) -> value
    for line in sys.stdin:
        m = LINE.match(line.strip())
        if not m:
            continue
        name, labels, value = m.group(1), dict(LABEL.findall(m.group(2) or "")), float(m.group(3))
        priority = labels.get("priority")
        if priority is None:
            continue
        extra = labels.get("le") if name.endswith("_bucket") else None
        key = (name, priority, extra)
        totals[key] = totals.get(key, 0.0) + value

    def get(name, priority, extra=None):
        return int(totals.get((name, priority, extra), 0))

    print(f"  {'':4} {'timed':>7} {'acked':>7} {'in SLA':>7} {'breached':>9} {'escalated':>10} {'open':>6}  SLA")
    for p, sla in SLA_SECONDS.items():
        timed = get("leadflow_sla_tracked_total", p)
        acked = get("leadflow_time_to_ack_seconds_count", p)
        in_sla = get("leadflow_time_to_ack_seconds_bucket", p, str(sla))
        breached = get("leadflow_sla_breaches_total", p)
        escalated = get("leadflow_escalations_total", p)
        open_now = get("leadflow_sla_open_decisions", p)
        print(f"  {p:4} {timed:>7} {acked:>7} {in_sla:>7} {breached:>9} {escalated:>10} {open_now:>6}  {sla // 60} min")
    print("  (open: waiting for an acknowledgement before the deadline; a P1 or P2 lead never")
    print("   acknowledged breaches at 5 or 30 minutes, after this demo ends)")


if __name__ == "__main__":
    main()
