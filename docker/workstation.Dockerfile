# CPU image for a workstation next to PACS: `tea-med serve` (the DICOM node) as the entry point.
# Not built or run on this project's machines (see docker/README.md).
# The plain install: no training-only dependency (no MLflow, no ONNX exporter).
FROM python:3.11-slim
WORKDIR /opt/tea_med
COPY pyproject.toml README.md ./
COPY tea_med ./tea_med
COPY bundles ./bundles
RUN pip install --no-cache-dir "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir . \
    && useradd --system --home /var/lib/tea_med tea_med \
    && mkdir -p /var/lib/tea_med/spool /etc/tea_med && chown -R tea_med /var/lib/tea_med
USER tea_med
# the exported student bundle is mounted at /opt/bundle, the settings at /etc/tea_med/node.toml
VOLUME ["/var/lib/tea_med/spool", "/opt/bundle"]
EXPOSE 11112
ENTRYPOINT ["tea-med", "serve", "--config", "/etc/tea_med/node.toml"]
