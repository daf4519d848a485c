#!/usr/bin/env bash
# Per-message cost of `mailchute deliver` as a Postfix pipe MDA (not a test): BENCH_RUNS
# runs (default 2000), each one process reading a BENCH_SIZE-byte message (default 4096)
# from stdin into a Maildir, one after another, next to in the same run:
#   cat        `cat > file` (one exec, no fsync): the floor
#   dd         `dd conv=fsync` (one exec plus one fsync): what one durable write costs
#   lda        Dovecot's `dovecot-lda` into a Maildir (run as nobody, no userdb)
#   deliver    `mailchute deliver` (release build) into a Maildir sink
#   nopie      the same, linked as a position-dependent executable (the `no-pie` feature)
#   s3         `mailchute deliver` into an s3 sink on a local s3s-fs (MAILCHUTE_TEST_S3S_FS,
#              default /var/cache/mailchute-ci/s3s-fs/bin/s3s-fs, as scripts/test installs it)
# and prints the mean time per message and deliver's ratio to each.
#
#   bench/deliver.sh [cat dd lda deliver s3 ...]     (default: all)
set -euo pipefail

RUNS="${BENCH_RUNS:-2000}"
SIZE="${BENCH_SIZE:-4096}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
targets=("$@")
((${#targets[@]})) || targets=(cat dd lda deliver nopie s3)
work="$(mktemp -d /tmp/mailchute-bench-deliver.XXXXXX)"
chmod 755 "$work"
s3_pid=""
cleanup() {
    if [[ -n "$s3_pid" ]]; then kill "$s3_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

msg="$work/msg.eml"
{
    printf 'From: bench@example.org\nTo: rcpt@example.org\nSubject: deliver bench\n\n'
    head -c "$SIZE" /dev/zero | tr '\0' 'x' | fold -w 76
    printf '\n'
} >"$msg"

built="${CARGO_TARGET_DIR:-$repo_root/target}/release/mailchute"
bin="$work/mailchute"
nopie_bin="$work/mailchute-nopie"
# The no-pie build relinks only the binary (what the feature does, without rebuilding the
# library under another feature set).
(
    cd "$repo_root"
    cargo build --release --bin mailchute
    cp "$built" "$bin"
    cargo rustc --release --bin mailchute -- -C link-arg=-no-pie
    cp "$built" "$nopie_bin"
) >&2

now() { date +%s.%N; }

# stored_check NAME COUNT: a run that stored fewer messages than it ran measured failures.
stored_check() {
    if (($2 < RUNS)); then echo "$1: WARNING only $2 of $RUNS messages stored" >&2; fi
}
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
    # A queue id per run, as Postfix gives: each run stores a message of its own (with one
    # id, every run after the first would find the first's copy and store nothing).
    local n=0
    deliver_one() { n=$((n + 1)); "$bin" deliver -c "$work/deliver.toml" -a rcpt@example.org -f bench@example.org --id "B$n"; }
    run deliver deliver_one
    stored_check deliver "$(find "$work/deliver/Maildir/new" -type f | wc -l)"
}

bench_nopie() {
    mkdir -p "$work/nopie"
    sed "s|$work/deliver/Maildir|$work/nopie/Maildir|" "$work/deliver.toml" >"$work/nopie.toml" 2>/dev/null ||
        { echo "nopie: runs after deliver (its config), skipped" >&2; return; }
    local n=0
    nopie_one() { n=$((n + 1)); "$nopie_bin" deliver -c "$work/nopie.toml" -a rcpt@example.org -f bench@example.org --id "N$n"; }
    run nopie nopie_one
    stored_check nopie "$(find "$work/nopie/Maildir/new" -type f | wc -l)"
}

bench_s3() {
    local s3s="${MAILCHUTE_TEST_S3S_FS:-/var/cache/mailchute-ci/s3s-fs/bin/s3s-fs}"
    [[ -x "$s3s" ]] || { echo "s3: $s3s not installed (scripts/test installs it), skipped" >&2; return; }
    local port
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    mkdir -p "$work/s3/mail"
    "$s3s" --host 127.0.0.1 --port "$port" --access-key AK --secret-key SKSKSKSK "$work/s3" >/dev/null 2>&1 &
    s3_pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    printf '[b]\naws_access_key_id = AK\naws_secret_access_key = SKSKSKSK\n' >"$work/aws-credentials"
    cat >"$work/s3.toml" <<CONF
[[route]]
match = ["*"]
sinks = ["s3"]

[sink.s3]
type = "s3"
bucket = "mail"
region = "us-east-1"
endpoint = "http://127.0.0.1:$port"
force_path_style = true
credentials_file = "$work/aws-credentials"
profile = "b"
CONF
    local n=0
    s3_one() { n=$((n + 1)); "$bin" deliver -c "$work/s3.toml" -a rcpt@example.org -f bench@example.org --id "S$n"; }
    run s3 s3_one
    stored_check s3 "$(find "$work/s3/mail" -type f -name '*.eml' | wc -l)"
}

for t in cat dd lda deliver nopie s3; do
    if [[ " ${targets[*]} " == *" $t "* ]]; then "bench_$t"; fi
done
if [[ -n "${per_msg[s3]:-}" && -n "${per_msg[deliver]:-}" ]]; then
    awk -v s="${per_msg[s3]}" -v d="${per_msg[deliver]}" \
        'BEGIN{printf "deliver to s3 / to maildir %.2f\n", s/d}'
fi
if [[ -n "${per_msg[nopie]:-}" && -n "${per_msg[deliver]:-}" ]]; then
    awk -v n="${per_msg[nopie]}" -v d="${per_msg[deliver]}" \
        'BEGIN{printf "no-pie / pie %.2f\n", n/d}'
fi
if [[ -n "${per_msg[deliver]:-}" ]]; then
    for t in cat dd lda; do
        if [[ -n "${per_msg[$t]:-}" ]]; then
            awk -v d="${per_msg[deliver]}" -v o="${per_msg[$t]}" -v t="$t" \
                'BEGIN{printf "deliver / %-4s %.2f\n", t, d/o}'
        fi
    done
fi
