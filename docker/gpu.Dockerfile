# CUDA image for the training worker (`zerase worker`) and the generation service
# (`zerase serve` with ZERASE_API_ROUTES=generation): both load the model onto the GPU.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cu128
COPY pyproject.toml README.md alembic.ini ./
COPY zerase ./zerase
COPY service ./service
COPY api ./api
COPY worker ./worker
COPY cli ./cli
COPY migrations ./migrations
# Not root; a named volume mounted at /app/var starts out with this directory's owner.
RUN pip install ".[ml]" \
    && useradd --create-home zerase && mkdir -p /app/var && chown zerase /app/var
USER zerase
ENV ZERASE_DEVICE=cuda ZERASE_DTYPE=bfloat16 ZERASE_API_HOST=0.0.0.0 ZERASE_EMBEDDED_WORKER=false
EXPOSE 8000 9100
CMD ["zerase", "worker"]
