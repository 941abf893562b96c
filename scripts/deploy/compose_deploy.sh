#!/usr/bin/env bash
# Deploy (or roll back to) pitstop image tag VERSION with Docker Compose, on this machine.
# Run by `pitstop deploy ENV --version VERSION` (config/deployments.yaml) through the script
# supervisor: confined, timed, output redacted. Needs PITSTOP_COMPOSE_DIR (the directory holding
# the fleet's docker-compose.yml and .env) and PITSTOP_IMAGE (the image repository).
set -euo pipefail
version="${1:?usage: compose_deploy.sh VERSION}"
cd "${PITSTOP_COMPOSE_DIR:?set PITSTOP_COMPOSE_DIR to the directory of docker-compose.yml}"
export PITSTOP_IMAGE="${PITSTOP_IMAGE:?set PITSTOP_IMAGE to the image repository}:${version}"
echo "deploying ${PITSTOP_IMAGE} in ${PWD}"
docker compose pull --quiet
# --wait: return only once every service's healthcheck (pitstop smoke / doctor) passes.
docker compose up --detach --wait --wait-timeout 300 --remove-orphans
docker compose ps
