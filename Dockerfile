# The ledger's processes, for docker-compose.yml. Dependencies are the pinned ones of constraints.txt.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY ledger ledger
COPY projections projections
COPY dispatcher dispatcher
COPY services services
COPY console console
COPY migrations migrations
RUN pip install --no-cache-dir -c constraints.txt -e .
ENTRYPOINT ["ledger"]
