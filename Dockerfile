# syntax=docker/dockerfile:1
# Build stage: a wheel of campaign-fsm and its dependencies.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fsm ./fsm
COPY adapters ./adapters
COPY schemas ./schemas
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: no compilers, no sources, a non-root user.
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 campaign
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER campaign
WORKDIR /home/campaign
ENTRYPOINT ["campaign-fsm"]
CMD ["--help"]
