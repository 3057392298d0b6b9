# CUDA training image for tea_med (not yet built or tested; see docker/README.md).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/tea_med
COPY pyproject.toml README.md ./
COPY tea_med ./tea_med
COPY bundles ./bundles
RUN python3.11 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir "torch==2.13.0" --index-url https://download.pytorch.org/whl/cu128 \
    && /opt/venv/bin/pip install --no-cache-dir ".[train]"
ENV PATH=/opt/venv/bin:$PATH
ENTRYPOINT ["tea-med"]
