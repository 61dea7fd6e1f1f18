# Slim image for the control API and the one-shot migration: no GPU; CPU torch, because submitting a
# job resolves its configuration against the model's files (the same ./models the workers mount).
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md alembic.ini ./
COPY zerase ./zerase
COPY service ./service
COPY api ./api
COPY worker ./worker
COPY migrations ./migrations
# Not root; a named volume mounted at /app/var starts out with this directory's owner.
RUN pip install . \
    && useradd --create-home zerase && mkdir -p /app/var && chown zerase /app/var
USER zerase
ENV ZERASE_API_HOST=0.0.0.0 ZERASE_EMBEDDED_WORKER=false
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["zerase", "serve"]
