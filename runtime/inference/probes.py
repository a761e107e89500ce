"""The paths of the server's probes, shared by the server (api/system.py) and the pod specs the controller writes.

- `/health` (and `/healthz`): Kaito's probe: 200 once the model is loaded and the engine runs, else 503.
- `/v1/health/live`: the process can answer and its engine has not stopped (200 while the model loads), as NIM
  names it. Liveness: a 503 here means restart the pod.
- `/v1/health/ready`: the engine can take work now (what `/health` says). Readiness and start-up.
"""

HEALTH = "/health"
LIVE = "/v1/health/live"
READY = "/v1/health/ready"
