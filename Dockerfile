# The API and the workers in one image; docker-compose.yml picks the command per service.
# Installs exactly what uv.lock pins, the same lock that `make run` and `make test` use.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH

WORKDIR /app
RUN useradd --create-home --uid 10001 streamshop

COPY scripts/uv-requirements.txt ./scripts/
RUN pip install --require-hashes -r scripts/uv-requirements.txt

# Dependencies first (their layer survives code changes), then the project itself.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY app ./app
COPY events ./events
COPY projections ./projections
COPY workers ./workers
RUN uv sync --frozen --no-dev --no-editable

USER streamshop
EXPOSE 8000
CMD ["uvicorn", "--factory", "app.main:create_app", "--host", "0.0.0.0", "--port", "8000"]
