# CUDA image for the training worker (and, later, the generation service).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
RUN pip install --no-cache-dir "torch==2.13.0" --index-url https://download.pytorch.org/whl/cu128
COPY pyproject.toml README.md alembic.ini ./
COPY zerase ./zerase
COPY service ./service
COPY api ./api
COPY worker ./worker
COPY migrations ./migrations
RUN pip install --no-cache-dir .
ENV ZERASE_DEVICE=cuda ZERASE_DTYPE=bfloat16
CMD ["zerase", "worker"]
