"""`invoke chaos`: fault injection against one environment.

Each scenario injects its own faults on loopback (a killed process, a slow or failing
payment gateway, a crowd on one seat, malformed requests, a redeploy under load), is
bounded in time and requests, undoes its faults in `finally` (gateway latency and outage
restored, killed processes restarted) and returns its figures on one line. Seat ids are
unique per run (`chaos-<run>:...`), so it runs again and again against a live stack.
Scenarios that cannot apply to an environment are skipped with the reason.

One module per family of scenarios: `base` (context, preconditions, restart), `crashes`,
`gateway` (faults), `contention`, `bad_input` (corpus and fuzzer), `signing` and
`node_loss`; `registry` lists them and runs them."""

from ops.chaos.base import ChaosContext
from ops.chaos.registry import SCENARIOS, run_chaos, select

__all__ = ["SCENARIOS", "ChaosContext", "run_chaos", "select"]
