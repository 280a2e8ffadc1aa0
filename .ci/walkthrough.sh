#!/usr/bin/env bash
# Runs one of the README's two walkthroughs as a new user would, and checks that it works:
#   .ci/walkthrough.sh        "## Walkthrough: two users chat with curl"
#   .ci/walkthrough.sh cli    "## Walkthrough: the same chat with the command-line client"
#
# The commands are read FROM README.md (the two ```sh blocks of that section), so the
# README and this test cannot drift apart: the first block's lines (the server and the two
# listeners, `cargo xtask listen` or `netapi-chat client listen`, one per terminal) are
# started in the background, the second block (the session, with curl or with
# `netapi-chat client`) is run as written. Only three things are changed, and each is
# checked to be present in the README first:
#   - the ports 8080 / 9001 / 9002 become free ports (the fixed ones may be taken),
#   - `cargo run --release` starts the server from the repository with a fresh data directory
#     in a temporary working directory (where the session reads `netapi-chat-data/tokens`);
#     it stays a debug build unless WALKTHROUGH_PROFILE=release, since CI has just built it,
#   - `curl` is wrapped to record each answer's status: every one must be 2xx; in the cli
#     variant `netapi-chat` runs the repository's binary (as `cargo run` would) and each
#     command's exit status is recorded: every one must be 0.
# Then each notification the README promises must arrive at the right listener (in the cli
# variant, with its signature verified by `netapi-chat client listen`).
#
# Needs bash, curl (installed with apt-get when missing and running as root) and cargo.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
README="$ROOT/README.md"
VARIANT=${1:-curl}
case "$VARIANT" in
    curl) HEADING='## Walkthrough: two users chat with curl' ;;
    cli) HEADING='## Walkthrough: the same chat with the command-line client' ;;
    *)
        echo "usage: $0 [curl|cli]" >&2
        exit 2
        ;;
esac

WALKTHROUGH_NAME="walkthrough ($VARIANT)"
# shellcheck source=.ci/walkthrough-lib.sh
. "$ROOT/.ci/walkthrough-lib.sh"
ensure_curl
walkthrough_tmp walkthrough

# --- the README's walkthrough blocks ---------------------------------------------------------
readme_section "$HEADING"
expect_blocks 2
TERMINALS=$(block 1)
SESSION=$(block 2)

for literal in 127.0.0.1:8080 127.0.0.1:9001/ 127.0.0.1:9002/; do
    printf '%s\n' "$SESSION" | grep -qF "$literal" || fail "the session block no longer uses $literal"
done
printf '%s\n' "$TERMINALS" | grep -q 'listen 9001 .*alice' || fail "no 'listen 9001' for alice"
printf '%s\n' "$TERMINALS" | grep -q 'listen 9002 .*bob' || fail "no 'listen 9002' for bob"
printf '%s\n' "$TERMINALS" | grep -q 'cargo run --release' || fail "no 'cargo run --release'"

# --- free ports (the README's own when they are free) ----------------------------------------
SERVER_PORT=$(pick_port 8080)
TAKEN=" $SERVER_PORT "
ALICE_PORT=$(pick_port 9001)
TAKEN=" $SERVER_PORT $ALICE_PORT "
BOB_PORT=$(pick_port 9002)
say "ports: server $SERVER_PORT, alice's listener $ALICE_PORT, bob's listener $BOB_PORT"

ports() {
    sed -e "s/127\.0\.0\.1:8080/127.0.0.1:$SERVER_PORT/g" \
        -e "s/\b9001\b/$ALICE_PORT/g" -e "s/\b9002\b/$BOB_PORT/g"
}

# --- the three terminals ---------------------------------------------------------------------
# `cargo` as the README's lines call it: see readme_cargo in walkthrough-lib.sh.
readme_cargo
# `netapi-chat` as if installed: the repository's binary, built like the server.
PROFILE_ARGS=""
[ "${WALKTHROUGH_PROFILE:-debug}" = release ] && PROFILE_ARGS=--release
netapi-chat() {
    # shellcheck disable=SC2086 # PROFILE_ARGS is empty or one word
    exec "$CARGO" run --quiet $PROFILE_ARGS --manifest-path "$ROOT/Cargo.toml" --bin netapi-chat -- "$@"
}
n=0
while IFS= read -r line; do
    line=${line%%#*}
    [ -n "${line// /}" ] || continue
    n=$((n + 1))
    say "terminal $n: $line"
    (eval "$line") >"$TMP/terminal$n.log" 2>&1 &
    PIDS+=($!)
done < <(printf '%s\n' "$TERMINALS" | ports)
[ "$n" = 3 ] || fail "expected 3 terminal commands, found $n"

wait_for() { # what, seconds, command...
    local what=$1 secs=$2
    shift 2
    local pid
    for _ in $(seq "$((secs * 10))"); do
        "$@" && return 0
        for pid in "${PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null || fail "a terminal's command exited while waiting for: $what"
        done
        sleep 0.1
    done
    fail "$what did not happen within ${secs}s"
}
listening() { grep -q 'listening for notifications' "$TMP/terminal$1.log" 2>/dev/null; }
server_up() { grep -q 'netapi-chat listening on' "$TMP/terminal1.log" 2>/dev/null; }
wait_for "server start" 600 server_up
warned() { grep -q 'WARN.*NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK' "$TMP/terminal1.log"; }
wait_for "the server's warning that loopback callbacks are allowed" 10 warned
wait_for "alice's listener start" 600 listening 2
wait_for "bob's listener start" 600 listening 3

# --- the session, with every curl's status recorded ------------------------------------------
STATUS="$TMP/status"
: >"$STATUS"
# The session's `netapi-chat`: runs the binary (without exec: the session goes on) and
# records each command's exit status.
netapi-chat() {
    local code=0
    # shellcheck disable=SC2086 # PROFILE_ARGS is empty or one word
    "$CARGO" run --quiet $PROFILE_ARGS --manifest-path "$ROOT/Cargo.toml" --bin netapi-chat -- "$@" || code=$?
    echo "$code" >>"$STATUS"
    if [ "$code" != 0 ]; then
        say "netapi-chat $* exited $code"
        return 1
    fi
}
curl() {
    command curl --write-out '%{stderr}%{http_code}\n' "$@" 2>>"$STATUS"
    local code
    code=$(tail -n 1 "$STATUS")
    case "$code" in
        2??) ;;
        *)
            say "curl $* answered $code"
            return 1
            ;;
    esac
}
printf '%s\n' "$SESSION" | ports >"$TMP/session.sh"
case "$VARIANT" in
    curl) CALL='curl ' ;;
    cli) CALL='netapi-chat client ' ;;
esac
CALLS=$(grep -c "$CALL" "$TMP/session.sh" || true)
[ "$CALLS" -gt 0 ] || fail "the session block has no '$CALL' command"
say "running the session block ($CALLS '$CALL' commands) in $TMP"
# A separate bash, so that `set -e` holds inside (it is ignored in a command followed by ||).
export -f curl netapi-chat say
export STATUS CARGO ROOT VARIANT PROFILE_ARGS
(cd "$TMP" && bash -euo pipefail "$TMP/session.sh") >"$TMP/session.log" 2>&1 ||
    fail "the session block failed (statuses: $(tr '\n' ' ' <"$STATUS"))"
ANSWERS=$(wc -l <"$STATUS")
[ "$ANSWERS" = "$CALLS" ] || fail "expected $CALLS answers, got $ANSWERS"
say "every command succeeded: $(tr '\n' ' ' <"$STATUS")"

# --- the notifications the README promises ---------------------------------------------------
# A listener prints "--- POST / HTTP/1.1 (content type)" and then the body: one delivery is
# the text from one "--- " line to the next. `arrived LOG WORD...` is true when one delivery
# holds every WORD.
arrived() {
    local log=$1
    shift
    awk -v words="$*" '
        function check() { if (block != "") { ok = 1; for (i = 1; i <= n; i++) if (index(block, w[i]) == 0) ok = 0; if (ok) found = 1 } }
        BEGIN { n = split(words, w, " ") }
        /^--- / { check(); block = "" }
        { block = block "\n" $0 }
        END { check(); exit !found }' "$log"
}
ALICE="$TMP/terminal2.log"
BOB="$TMP/terminal3.log"
expect() { # who, log, words...
    local who=$1 log=$2
    shift 2
    wait_for "$* at $who's listener" 30 arrived "$log" "$@"
    say "ok: $who's listener got $*"
}
# The cli variant's listeners verify each notification's signature with the secret the
# session subscribed with.
VERIFIED=()
[ "$VARIANT" = cli ] && VERIFIED=('signature verified')
expect bob "$BOB" '(application/xml' sessionInvitationNotification "${VERIFIED[@]}"
expect alice "$ALICE" '(application/json' participantStatusNotification Connected "${VERIFIED[@]}"
expect bob "$BOB" messageNotification '12:30?' "${VERIFIED[@]}"
expect alice "$ALICE" messageDeliveryNotification Delivered "${VERIFIED[@]}"
expect bob "$BOB" chatEventNotification SessionEnded "${VERIFIED[@]}"
# Seed 7.1.5: the application that ends the session is told too (issue 11, item 3).
expect alice "$ALICE" chatEventNotification SessionEnded "${VERIFIED[@]}"
say "passed"
