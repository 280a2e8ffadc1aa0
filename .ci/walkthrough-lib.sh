# shellcheck shell=bash
# What the README walkthrough checks share (sourced by .ci/walkthrough.sh and
# .ci/walkthrough-channels.sh, not run): messages, curl, a temporary directory whose
# background processes are stopped (and logs shown on failure) at exit, the README section's
# ```sh blocks, free ports, and `cargo` as the README's lines call it. The caller sets README
# and WALKTHROUGH_NAME first.

say() { echo "$WALKTHROUGH_NAME: $*" >&2; }
fail() {
    say "FAILED: $*"
    exit 1
}

# curl, installed with apt-get when missing and running as root on Debian.
ensure_curl() {
    command -v curl >/dev/null 2>&1 && return
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing curl"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null
    else
        fail "curl is missing (install it, or run as root on Debian to have it installed)"
    fi
}

# TMP: a new temporary directory named after $1; PIDS: background processes to stop at exit,
# when every $TMP/*.log is shown if the check failed and TMP is removed.
walkthrough_tmp() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/netapi-chat-$1.XXXXXX")
    PIDS=()
    trap cleanup EXIT
}
cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$status" != 0 ]; then
        for log in "$TMP"/*.log; do
            [ -e "$log" ] || continue
            echo "----- $(basename "$log")" >&2
            cat "$log" >&2
        done
    fi
    rm -rf "$TMP"
}

# SECTION: the README's section whose heading line starts with $1, up to the next `## `.
readme_section() {
    SECTION=$(awk -v heading="$1" 'index($0, heading) == 1 {on = 1; next} /^## / {on = 0} on' "$README")
    [ -n "$SECTION" ] || fail "README.md has no \"$1\" section"
}
# The $1-th ```sh block of SECTION.
block() {
    printf '%s\n' "$SECTION" | awk -v want="$1" '
        /^```sh$/ { n++; inside = (n == want); next }
        /^```/    { inside = 0; next }
        inside'
}
# Fails unless SECTION has exactly $1 ```sh blocks.
expect_blocks() {
    local n
    n=$(printf '%s\n' "$SECTION" | grep -c '^```sh$' || true)
    [ "$n" = "$1" ] || fail "expected $1 sh blocks in the walkthrough, found $n"
}

# A free loopback port: $1 (the README's own) when it is free, else a random one not in TAKEN,
# below Linux's ephemeral range (32768 on), which the kernel could hand to another process
# between this check and the server's bind.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
TAKEN=" "
pick_port() {
    local p
    for p in "$1" $(shuf -i 20000-32000 -n 100); do
        case "$TAKEN" in *" $p "*) continue ;; esac
        if port_free "$p"; then
            TAKEN="$TAKEN$p "
            echo "$p"
            return
        fi
    done
    fail "no free port found"
}

# Defines `cargo` as the README's lines call it: `cargo run --release` runs the server from the
# repository (a debug build unless WALKTHROUGH_PROFILE=release) with its data directory in TMP
# and bound to 127.0.0.1:$SERVER_PORT; any other `cargo …` (e.g. `cargo xtask listen`) runs in
# the repository. Each call execs: the README's lines run it in a subshell. The caller sets
# ROOT, TMP and SERVER_PORT first.
readme_cargo() {
    CARGO=$(type -P cargo) || fail "cargo is not on PATH"
    cargo() {
        if [ "${1:-}" = run ] && [ "${2:-}" = --release ]; then
            shift 2
            local profile=()
            [ "${WALKTHROUGH_PROFILE:-debug}" = release ] && profile=(--release)
            cd "$ROOT"
            NETAPI_CHAT_DATA_DIR="$TMP/netapi-chat-data" NETAPI_CHAT_BIND="127.0.0.1:$SERVER_PORT" \
                exec "$CARGO" run --quiet "${profile[@]}" --bin netapi-chat "$@"
        fi
        cd "$ROOT"
        exec "$CARGO" "$@"
    }
}
