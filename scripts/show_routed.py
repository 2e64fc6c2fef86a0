"""Pretty-prints `leadflow topics peek` output of routed leads: who, where, why."""
import json
import sys

for line in sys.stdin:
    r = json.loads(line)["value"]
    who = " ".join(x for x in (r.get("first_name"), r.get("last_name")) if x) or r["contact_id"]
    company = r.get("account_name") or r.get("company_name") or "no company"
    owner = r.get("owner_rep_id") or "-"
    print(f"  {r['priority']} -> {r['queue']:<22} owner={owner:<8} score={r['score']:<3} {who} ({company})")
    for reason in r["reasons"]:
        print(f"       - {reason}")
