# One image for every Cosmos process: `cosmos api`, `cosmos worker cpu`, `cosmos worker gpu`.
# ffmpeg comes from the imageio-ffmpeg wheel and probing from PyAV's wheel, so no apt packages:
# the slim base plus `pip install .` is the whole runtime. NVENC/NVML libraries are not in the
# image; the NVIDIA container toolkit mounts them from the host driver (see docker-compose).
ARG PYTHON_VERSION=3.12.11
FROM python:${PYTHON_VERSION}-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    COSMOS_DATA_DIR=/data

# Only what the package needs, named one by one: the build context also holds .venv and caches.
# `README*` may match nothing; pyproject.toml keeps the COPY valid either way.
COPY pyproject.toml README* /tmp/src/
COPY app /tmp/src/app
COPY workers /tmp/src/workers
RUN pip install /tmp/src && rm -rf /tmp/src

# A fixed, unprivileged uid. /data is created and owned here so that a fresh named volume mounted
# on it inherits this owner (Docker copies the image's directory into an empty volume).
RUN useradd --system --uid 10001 --user-group --home-dir /home/cosmos --create-home cosmos \
    && mkdir -p /data /media \
    && chown cosmos:cosmos /data
USER cosmos
WORKDIR /home/cosmos

EXPOSE 8000
CMD ["cosmos", "api", "--host", "0.0.0.0", "--port", "8000"]
