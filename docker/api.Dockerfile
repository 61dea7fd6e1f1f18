# Slim image for the API (and the one-shot migration): no GPU, CPU torch for artifact checks.
FROM python:3.11-slim
WORKDIR /app
RUN pip install --no-cache-dir "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md alembic.ini ./
COPY zerase ./zerase
COPY service ./service
COPY api ./api
COPY worker ./worker
COPY migrations ./migrations
RUN pip install --no-cache-dir .
ENV ZERASE_API_HOST=0.0.0.0 ZERASE_EMBEDDED_WORKER=false
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["zerase", "serve"]
