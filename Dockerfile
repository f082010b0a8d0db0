# The ledger's processes, for docker-compose.yml. Dependencies are the pinned ones of constraints.txt.
FROM python:3.11-slim
# The processes run unprivileged, as uid and gid LEDGER_UID. docker-compose.yml passes the same
# value here and to its kafka-secrets service, which gives this user the secrets volume.
ARG LEDGER_UID=10001
RUN groupadd --gid "$LEDGER_UID" ledger \
    && useradd --uid "$LEDGER_UID" --gid ledger --create-home --shell /usr/sbin/nologin ledger \
    && install -d -o ledger -g ledger -m 0700 /secrets
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY ledger ledger
COPY projections projections
COPY dispatcher dispatcher
COPY services services
COPY console console
COPY migrations migrations
RUN pip install --no-cache-dir -c constraints.txt -e .
USER ledger
ENV LEDGER_SECRETS_DIR=/secrets
ENTRYPOINT ["ledger"]
