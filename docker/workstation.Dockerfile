# CPU inference image for a workstation next to PACS (not yet built or tested; see docker/README.md).
# The plain install: no training-only dependency (no MLflow).
FROM python:3.11-slim
WORKDIR /opt/tea_med
COPY pyproject.toml README.md ./
COPY tea_med ./tea_med
COPY bundles ./bundles
RUN pip install --no-cache-dir "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir .
ENTRYPOINT ["tea-med"]
