#!/usr/bin/env bash
# Smoke check of a pitstop fleet deployed with Docker Compose: `pitstop smoke` inside a worker
# container (broker, workers per queue, canary round trip, Beat, consumer groups, triggers).
set -euo pipefail
cd "${PITSTOP_COMPOSE_DIR:?set PITSTOP_COMPOSE_DIR to the directory of docker-compose.yml}"
exec docker compose exec -T worker-linux pitstop smoke --timeout 5
