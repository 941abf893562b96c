FROM python:3.11-slim
RUN useradd --create-home pitstop
WORKDIR /app
COPY pyproject.toml README.md beat_schedule.py ./
COPY pitstop ./pitstop
COPY workers ./workers
COPY tasks ./tasks
RUN pip install --no-cache-dir .
COPY config ./config
COPY scripts ./scripts
USER pitstop
ENV PITSTOP_STATE_DIR=/home/pitstop/.state
ENTRYPOINT ["pitstop"]
