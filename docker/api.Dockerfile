# Slim image for the control API and the one-shot migration: no GPU and no torch. Submitting a job
# resolves its configuration from the model profile's plain files (the same ./models the workers
# mount), which needs no model code; `zerase serve` with ZERASE_API_ROUTES=control never imports torch.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY zerase ./zerase
COPY service ./service
COPY api ./api
COPY worker ./worker
COPY cli ./cli
COPY migrations ./migrations
# Not root; a named volume mounted at /app/var starts out with this directory's owner.
RUN pip install . \
    && useradd --create-home zerase && mkdir -p /app/var && chown zerase /app/var
USER zerase
ENV ZERASE_API_HOST=0.0.0.0 ZERASE_EMBEDDED_WORKER=false
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["zerase", "serve"]
