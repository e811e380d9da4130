"""Plan → capacity: turn a plan file into SkyPilot services, Kubernetes vLLM Deployments and
the gateway config that routes to them (`skyfleet plan --export DIR`, `skyfleet export`)."""
