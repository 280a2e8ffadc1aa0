#!/usr/bin/env bash
# Schemathesis against the served OpenAPI (issue 7, point 4): the real server binary on a free
# loopback port with a fresh data directory and a token file, every operation, every check,
# stateful sequences inferred from Location headers and from the schemas (the spec declares no
# OpenAPI links), a bounded number of examples per operation. Exits with schemathesis's status.
#
#   .ci/schemathesis.sh                    # defaults below
#   SCHEMATHESIS_EXAMPLES=100 SCHEMATHESIS_SEED=1 .ci/schemathesis.sh
#   SCHEMATHESIS_KEEP=1 .ci/schemathesis.sh   # keep the work directory (logs, reports, data)
#   SCHEMATHESIS_ARGS='--exclude-checks positive_data_acceptance' .ci/schemathesis.sh
#
# Reaching the operations' logic: generated path parameters are rarely `tel:`/`sip:` addresses,
# so the server would answer nearly everything with 400 SVC0004. The config written below binds
# `userId` and `participantId` to a dictionary of four users, the addresses in request bodies
# to a dictionary of invitees (one spelled with `tel:` visual separators), and `notifyURL` to
# loopback callback URLs (allowed by NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK=1; nothing listens
# there, so deliveries just fail and are retried in the background). Schemathesis applies
# dictionaries in its fuzzing and stateful phases; its coverage phase still sends its own
# boundary values (`0`, empty strings, …), so invalid addresses keep being tested. Stateful
# sequences follow links inferred from `Location` headers and from the schemas (the spec
# declares no OpenAPI links): create a subscription or session, then read, list, delete it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SCHEMATHESIS_VERSION=4.32.5
EXAMPLES=${SCHEMATHESIS_EXAMPLES:-30}
# A fixed seed, so that CI runs the same requests every time: a random seed once generated an
# XML body whose "invalid" callbackURL lost its invalid characters in schemathesis' own XML
# serialisation (a 2-character value reported as breaking maxLength 2048), and a landing must
# not depend on the draw. SCHEMATHESIS_SEED=random explores new draws locally. The draw
# follows the spec too: after the spec changes of 2026-12-05 the old seed drew a notification
# channel whose "too long" resourceURL (2,049 characters) lost two in schemathesis' XML
# serialisation and reached the server at 2,047, which it rightly accepted (the same
# artefact as above). After those of the evening of 2026-12-05 (an OMA 2012 group may start
# with no participant) that seed drew an XML group body whose participants schemathesis named
# `participantInformation` (the referenced schema's `xml.name`, where the wire and the XSD
# say `participant`: the published document did not name non-root uses then; it does since
# 2026-12-06, `codegen/src/openapi.rs` `name_elements`, and schemathesis writes `participant`),
# which the server ignored as unknown elements, and so started an empty group: a 201 it
# reports as "schema-violating request accepted". This seed draws 5,750 examples without it.
SEED=${SCHEMATHESIS_SEED:-2026120507}
if [[ $SEED == random ]]; then
    SEED=
fi
VENV=$ROOT/target/schemathesis-venv
TOKEN=fuzzTokenfuzzToken0123456789

# (a) schemathesis, pinned, in its own venv.
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
    echo "== installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# (a') the published documents are valid OpenAPI 3.0 by a validator that is not ours: a
# description that YAML read as a map (`{ description: Left, declined or withdrawn. }`) passed
# openapiv3 and progenitor, and broke openapi-core, spectral and redocly for a developer.
OSV_VERSION=0.9.0
if ! "$VENV/bin/pip" show openapi-spec-validator 2>/dev/null | grep -qx "Version: $OSV_VERSION"; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "openapi-spec-validator==$OSV_VERSION"
fi
echo "== openapi-spec-validator $OSV_VERSION on the published documents"
"$VENV/bin/openapi-spec-validator" generated/openapi/chat.openapi.json generated/openapi/chat.progenitor.json

# (b) the server binary, on 127.0.0.1:0 with a fresh data directory.
echo "== cargo build --bin netapi-chat"
cargo build --quiet --bin netapi-chat

WORK=$(mktemp -d)
SERVER_PID=
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n ${SCHEMATHESIS_KEEP:-} ]]; then
        echo "(kept $WORK)"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

mkdir -p "$WORK/data" "$WORK/report"
printf '%s *\n' "$TOKEN" >"$WORK/tokens"
chmod 600 "$WORK/tokens"

# Schemathesis sends bad credentials on purpose (its ignored_auth check), all from this one
# address: the per-address limit on failed authentication (tested in hardening_wire) would turn
# its later valid requests into 429s. A long poll of a notification channel waits at most 1 s
# here (25 s by default), well within --max-response-time.
NETAPI_CHAT_BIND=127.0.0.1:0 \
NETAPI_CHAT_DATA_DIR="$WORK/data" \
NETAPI_CHAT_TOKEN_FILE="$WORK/tokens" \
NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK=1 \
NETAPI_CHAT_RETRY_SCHEDULE=0,1s \
NETAPI_CHAT_NOTIFY_TIMEOUT_MS=500 \
NETAPI_CHAT_AUTH_FAILURE_LIMIT=0 \
NETAPI_CHAT_CHANNEL_POLL_WAIT=1s \
    "$ROOT/target/debug/netapi-chat" >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!

# "netapi-chat listening on http://ADDR (...)"
ADDR=
for _ in $(seq 1 300); do
    if [[ -s $WORK/server.out ]]; then
        ADDR=$(head -n 1 "$WORK/server.out" | sed -n 's#^netapi-chat listening on http://\([^ ]*\).*#\1#p')
        [[ -n $ADDR ]] && break
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "netapi-chat exited at start-up:" >&2
        cat "$WORK/server.err" >&2
        exit 1
    fi
    sleep 0.1
done
if [[ -z $ADDR ]]; then
    echo "netapi-chat did not print its address within 30 s" >&2
    exit 1
fi
echo "== netapi-chat listening on $ADDR (data in $WORK/data)"

# The dictionaries that make path parameters and body addresses valid (see the top).
cat >"$WORK/schemathesis.toml" <<'EOF'
[dictionaries.users]
values = ["tel:+15551230001", "sip:bob@example.com", "tel:+15551230003", "sip:carol@example.org"]

[dictionaries.invitees]
values = ["sip:bob@example.com", "tel:+1-555-123-0003", "sip:carol@example.org", "tel:+15551230001"]

[dictionaries.callbacks]
values = ["http://127.0.0.1:10/alice", "http://127.0.0.1:10/bob"]

[parameters]
"path.userId" = { dictionary = "users", probability = 1.0 }
"path.participantId" = { dictionary = "users", probability = 1.0 }
"body.chatSessionInformation.participant[*].address" = { dictionary = "invitees", probability = 1.0 }
"body.participantList.participant[*].address" = { dictionary = "invitees", probability = 1.0 }
"body.participantInformation.address" = { dictionary = "invitees", probability = 1.0 }
"body.chatSubscription.callbackReference.notifyURL" = { dictionary = "callbacks", probability = 1.0 }

# A schema-violating body larger than NETAPI_CHAT_MAX_BODY_BYTES is refused before it is read,
# with 413 POL2004 (the spec declares it); schemathesis's default list of rejections lacks 413.
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]

[phases.stateful.inference]
algorithms = ["location-headers", "dependency-analysis"]
EOF
# Schemathesis keeps replayable failures in `.schemathesis/` under the current directory by
# default; keep them with this run instead of in the work tree (`st replay` works while kept).
printf '\n[cache]\ndirectory = "%s"\n' "$WORK/cache" >>"$WORK/schemathesis.toml"

# (c) every operation, every check but two, excluded for written reasons:
#   - positive_data_acceptance: it expects every schema-valid request to succeed, but the chat
#     API has state and address rules a schema cannot express (a message before anyone joined
#     is 403 POL1012, `Sent` cannot be confirmed, a userId must be a tel:/sip: address, a
#     notifyURL must reach an allowed host). Those refusals are covered by the error suites.
#   - use_after_free: the spec decides that an ended session stays readable (GET 200 after the
#     DELETE that ends it); schemathesis reads that as a use after free.
ARGS=(
    run "http://$ADDR/openapi.json"
    --url "http://$ADDR"
    -H "Authorization: Bearer $TOKEN"
    --checks all
    --exclude-checks "positive_data_acceptance,use_after_free"
    --phases "examples,coverage,fuzzing,stateful"
    --max-examples "$EXAMPLES"
    --workers 1
    --continue-on-failure
    --request-timeout 10
    --max-response-time 5
    --generation-database none
    --no-color
    --report "json,junit,vcr"
    --report-dir "$WORK/report"
)
if [[ -n $SEED ]]; then
    ARGS+=(--seed "$SEED")
fi
# Extra flags for a local investigation, e.g. SCHEMATHESIS_ARGS='--include-method POST'.
if [[ -n ${SCHEMATHESIS_ARGS:-} ]]; then
    read -r -a EXTRA <<<"$SCHEMATHESIS_ARGS"
    ARGS+=("${EXTRA[@]}")
fi
echo "== schemathesis ${ARGS[*]}"
START=$(date +%s)
STATUS=0
"$VENV/bin/schemathesis" --config-file "$WORK/schemathesis.toml" "${ARGS[@]}" | tee "$WORK/schemathesis.log" || STATUS=${PIPESTATUS[0]}
ELAPSED=$(($(date +%s) - START))

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "netapi-chat died during the run:" >&2
    tail -n 50 "$WORK/server.err" >&2
    STATUS=1
fi

# (d) the figures, from the JSON run report.
if "$VENV/bin/python" - "$WORK/report" "$ELAPSED" <<'EOF'
import json, pathlib, sys

report_dir, elapsed = pathlib.Path(sys.argv[1]), sys.argv[2]
reports = sorted(report_dir.glob("json-*.json"))
if not reports:
    print(f"schemathesis: no run report (crashed?), {elapsed} s")
    sys.exit(0)
report = json.loads(reports[-1].read_text())
operations = report["operations"]["tested"]
examples = report["test_cases"]["generated"]
failures = report["test_cases"]["unique_failures"] + report["test_cases"]["errored"]
for failure in report["failures"]:
    print(f"  {failure['code']} {failure['title']} x{failure['count']}: {', '.join(failure['operations'])}")
for error in report["errors"]:
    print(f"  error: {json.dumps(error)[:300]}")
print(f"schemathesis: {operations} operations, {examples} examples, {failures} failures, {elapsed} s")
EOF
then :; else echo "schemathesis: the run report could not be read, ${ELAPSED} s"; fi
exit "$STATUS"
