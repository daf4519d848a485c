#!/usr/bin/env bash
# Per-message cost of `mailchute deliver` as a Postfix pipe MDA (not a test): BENCH_RUNS
# runs (default 2000), each one process reading a BENCH_SIZE-byte message (default 4096)
# from stdin into a Maildir, one after another, next to in the same run:
#   cat        `cat > file` (one exec, no fsync): the floor
#   dd         `dd conv=fsync` (one exec plus one fsync): what one durable write costs
#   lda        Dovecot's `dovecot-lda` into a Maildir (run as nobody, no userdb)
#   deliver    `mailchute deliver` (release build) into a Maildir sink
# and prints the mean time per message and deliver's ratio to each.
#
#   bench/deliver.sh [cat dd lda deliver ...]     (default: all)
set -euo pipefail

RUNS="${BENCH_RUNS:-2000}"
SIZE="${BENCH_SIZE:-4096}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
targets=("$@")
((${#targets[@]})) || targets=(cat dd lda deliver)
work="$(mktemp -d /tmp/mailchute-bench-deliver.XXXXXX)"
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT

msg="$work/msg.eml"
{
    printf 'From: bench@example.org\nTo: rcpt@example.org\nSubject: deliver bench\n\n'
    head -c "$SIZE" /dev/zero | tr '\0' 'x' | fold -w 76
    printf '\n'
} >"$msg"

bin="${CARGO_TARGET_DIR:-$repo_root/target}/release/mailchute"
(cd "$repo_root" && cargo build --release --bin mailchute) >&2

now() { date +%s.%N; }
declare -A per_msg

# run NAME COMMAND...: RUNS times COMMAND < msg, the mean in milliseconds.
run() {
    local name="$1"
    shift
    local t0 t1
    t0="$(now)"
    for ((i = 0; i < RUNS; i++)); do
        "$@" <"$msg" >/dev/null
    done
    t1="$(now)"
    per_msg[$name]="$(awk -v a="$t0" -v b="$t1" -v n="$RUNS" 'BEGIN{printf "%.2f", (b-a)*1000/n}')"
    printf '%-8s %8s ms per message (%d runs)\n' "$name" "${per_msg[$name]}" "$RUNS"
}

bench_cat() {
    mkdir -p "$work/cat"
    local n=0
    cat_one() { n=$((n + 1)); cat >"$work/cat/$n"; }
    run cat cat_one
}

bench_dd() {
    mkdir -p "$work/dd"
    local n=0
    dd_one() { n=$((n + 1)); dd of="$work/dd/$n" conv=fsync status=none; }
    run dd dd_one
}

bench_lda() {
    local lda=/usr/lib/dovecot/dovecot-lda
    [[ -x "$lda" ]] || { echo "lda: $lda not installed, skipped" >&2; return; }
    mkdir -p "$work/lda"
    chown nobody "$work/lda"
    cat >"$work/dovecot.conf" <<CONF
mail_location = maildir:$work/lda/Maildir
postmaster_address = postmaster@example.org
log_path = $work/lda/lda.log
base_dir = $work/lda/run
CONF
    chmod 644 "$work/dovecot.conf"
    lda_one() { runuser -u nobody -- env HOME="$work/lda" USER=nobody "$lda" -c "$work/dovecot.conf" -f bench@example.org; }
    run lda lda_one
}

bench_deliver() {
    mkdir -p "$work/deliver"
    cat >"$work/deliver.toml" <<CONF
[[route]]
match = ["*"]
sinks = ["box"]

[sink.box]
type = "maildir"
path = "$work/deliver/Maildir"
CONF
    deliver_one() { "$bin" deliver -c "$work/deliver.toml" -a rcpt@example.org -f bench@example.org; }
    run deliver deliver_one
}

for t in cat dd lda deliver; do
    if [[ " ${targets[*]} " == *" $t "* ]]; then "bench_$t"; fi
done
if [[ -n "${per_msg[deliver]:-}" ]]; then
    for t in cat dd lda; do
        if [[ -n "${per_msg[$t]:-}" ]]; then
            awk -v d="${per_msg[deliver]}" -v o="${per_msg[$t]}" -v t="$t" \
                'BEGIN{printf "deliver / %-4s %.2f\n", t, d/o}'
        fi
    done
fi
