#!/usr/bin/env bash
# Runs the README's "Notification channels" walkthrough as a new user would, and checks that it
# works: two users chat with curl, each application collecting its notifications with a
# long-poll loop on a notification channel (no listener, no NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK).
#
# The commands are read FROM README.md (the two ```sh blocks under "## Notification channels"):
# the first (the server) is started in the background, the second (the session) is run as
# written with `bash -euo pipefail` (its curls use -f, so any non-2xx answer fails it). Only the
# port 8080 becomes a free port, and `cargo run --release` starts the server from the
# repository with a fresh data directory in a temporary working directory (a debug build unless
# WALKTHROUGH_PROFILE=release). Then each poll loop's output must hold the notifications the
# README's comments name.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
README="$ROOT/README.md"

WALKTHROUGH_NAME=walkthrough-channels
# shellcheck source=.ci/walkthrough-lib.sh
. "$ROOT/.ci/walkthrough-lib.sh"
ensure_curl
walkthrough_tmp walkthrough-channels

readme_section "## Notification channels"
expect_blocks 2
TERMINAL=$(block 1)
SESSION=$(block 2)
printf '%s\n' "$TERMINAL" | grep -q 'cargo run --release' || fail "no 'cargo run --release'"
printf '%s\n' "$TERMINAL" | grep -q 'ALLOW_LOOPBACK' && fail "channels must not need ALLOW_LOOPBACK"
printf '%s\n' "$SESSION" | grep -qF 127.0.0.1:8080 || fail "the session no longer uses 127.0.0.1:8080"
if printf '%s\n' "$SESSION" | grep -q 'xtask listen'; then fail "the session starts a listener"; fi

SERVER_PORT=$(pick_port 8080)
say "server port $SERVER_PORT"

# `cargo` as the README's lines call it: see readme_cargo in walkthrough-lib.sh.
readme_cargo
line=$(printf '%s\n' "$TERMINAL" | sed -e 's/#.*//' | grep -v '^ *$')
say "terminal: $line"
(eval "$line") >"$TMP/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 6000); do
    grep -q 'netapi-chat listening on' "$TMP/server.log" 2>/dev/null && break
    kill -0 "${PIDS[0]}" 2>/dev/null || fail "the server exited"
    sleep 0.1
done
grep -q 'netapi-chat listening on' "$TMP/server.log" || fail "the server did not start"

printf '%s\n' "$SESSION" | sed -e "s/127\.0\.0\.1:8080/127.0.0.1:$SERVER_PORT/g" >"$TMP/session.sh"
say "running the session block in $TMP"
(cd "$TMP" && timeout 120 bash -euo pipefail "$TMP/session.sh") >"$TMP/session.log" 2>&1 ||
    fail "the session block failed"

ALICE="$TMP/tel%3A%2B15551230001.log"
BOB="$TMP/sip%3Abob%40example.com.log"
expect() { # who, log, words...
    local who=$1 log=$2
    shift 2
    for w in "$@"; do
        grep -qF -- "$w" "$log" || fail "$who's poll loop did not print $w"
    done
    say "ok: $who's poll loop printed $*"
}
# OMA's notificationList: XML notifications in the chat namespace, a JSON array of single-key objects
expect bob "$BOB" '<nc:notificationList' '<chat:sessionInvitationNotification' '<chat:messageNotification' '12:30?' SessionEnded
expect alice "$ALICE" '{"notificationList":[{"' participantStatusNotification Connected messageDeliveryNotification Delivered SessionEnded
say "passed"
