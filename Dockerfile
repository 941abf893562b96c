# The pitstop image: worker, Beat, serve and Flower are all `pitstop <command>` (docker-compose.yml).
FROM python:3.11-slim

# Never root: a fixed uid, so volumes and a Kubernetes securityContext can name it.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin pitstop
WORKDIR /app
COPY pyproject.toml README.md beat_schedule.py ./
COPY pitstop ./pitstop
COPY workers ./workers
COPY tasks ./tasks
RUN pip install --no-cache-dir . && pip check
COPY config ./config
COPY scripts ./scripts
USER pitstop:pitstop
ENV PITSTOP_HOME=/app \
    PITSTOP_STATE_DIR=/home/pitstop/.state \
    PYTHONUNBUFFERED=1

# Healthy when Redis answers (password accepted), the config is valid, workers answer and Beat
# leads: `pitstop doctor` (exit 0). docker-compose.yml gives each service a sharper check
# (`pitstop smoke` for workers: a canary task through their queues).
HEALTHCHECK --interval=30s --timeout=20s --start-period=60s --retries=3 \
    CMD ["pitstop", "doctor", "--timeout", "5"]

ENTRYPOINT ["pitstop"]
CMD ["--help"]
