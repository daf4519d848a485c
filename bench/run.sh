#!/usr/bin/env bash
# Throughput benchmark (not a test): Postfix's smtp-source sends BENCH_MESSAGES messages of
# BENCH_SIZE bytes over BENCH_SESSIONS parallel sessions to
#   sink      smtp-sink (accept and discard: the ceiling of this machine)
#   postfix   a private Postfix delivering to a virtual(8) Maildir (time until all delivered)
#   mailchute `mailchute serve`, sync listener, maildir sink (release build)
#   mailchute-queued  the same with a queued listener (timed until all are in the Maildir)
# and prints messages/s, MB/s, the ratio to smtp-sink, per-message latency percentiles
# (a Python client on one session) and mailchute's peak RSS.
#
#   bench/run.sh [sink|postfix|mailchute|mailchute-queued ...]     (default: all)
# Everything binds 127.0.0.1 and is stopped by its own pid on exit.
set -euo pipefail

MESSAGES="${BENCH_MESSAGES:-20000}"
SIZE="${BENCH_SIZE:-4096}"
SESSIONS="${BENCH_SESSIONS:-20}"
LATENCY_MESSAGES="${BENCH_LATENCY_MESSAGES:-500}"
PYTHON="${MAILCHUTE_TEST_PYTHON:-python3}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
targets=("$@")
((${#targets[@]})) || targets=(sink postfix mailchute mailchute-queued)

work="$(mktemp -d /tmp/mailchute-bench.XXXXXX)"
chmod 755 "$work"
pids=()
postfix_dir=""
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    if [[ -n "$postfix_dir" ]]; then postfix -c "$postfix_dir/etc" stop >/dev/null 2>&1 || true; fi
    for p in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_banner() { # port, seconds
    local deadline=$((SECONDS + $2)) line
    while ((SECONDS < deadline)); do
        if { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null; then
            if IFS= read -r -t 2 line <&3 && [[ "$line" == 220\ * ]]; then
                printf 'QUIT\r\n' >&3 || true
                exec 3>&- 3<&-
                return 0
            fi
            exec 3>&- 3<&-
        fi
        sleep 0.1
    done
    return 1
}

now() { date +%s.%N; }

# Sends LATENCY_MESSAGES messages one after another on one session and prints p50/p90/p99
# of MAIL FROM → 250 after the final dot, in milliseconds.
latency() { # port
    "$PYTHON" - "$1" "$LATENCY_MESSAGES" "$SIZE" <<'EOF'
import smtplib, sys, time
port, n, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
body = (b"x" * 76 + b"\r\n") * (size // 78 + 1)
msg = b"From: a@x\r\nTo: b@y\r\nSubject: latency\r\n\r\n" + body[:size]
s = smtplib.SMTP("127.0.0.1", port, local_hostname="bench.test", timeout=60)
times = []
for _ in range(n):
    t = time.perf_counter()
    s.sendmail("from@x", ["to@y"], msg)
    times.append((time.perf_counter() - t) * 1000)
s.quit()
times.sort()
pct = lambda p: times[min(len(times) - 1, int(len(times) * p))]
print(f"p50={pct(0.50):.2f}ms p90={pct(0.90):.2f}ms p99={pct(0.99):.2f}ms (n={n}, one session)")
EOF
}

declare -A rate
report() { # name, seconds, extra
    local name="$1" secs="$2" extra="${3:-}"
    rate[$name]="$(awk -v m="$MESSAGES" -v s="$secs" 'BEGIN{printf "%.1f", m/s}')"
    local mbs ratio=""
    mbs="$(awk -v m="$MESSAGES" -v b="$SIZE" -v s="$secs" 'BEGIN{printf "%.2f", m*b/s/1e6}')"
    if [[ -n "${rate[sink]:-}" && "$name" != sink ]]; then
        ratio="$(awk -v a="${rate[$name]}" -v b="${rate[sink]}" 'BEGIN{printf " (%.3f x smtp-sink)", a/b}')"
    fi
    if [[ -n "${rate[postfix]:-}" && "$name" == mailchute* ]]; then
        ratio+="$(awk -v a="${rate[$name]}" -v b="${rate[postfix]}" 'BEGIN{printf " (%.2f x postfix)", a/b}')"
    fi
    printf '%-16s %8s msg/s %7s MB/s%s  %.2fs %s\n' "$name" "${rate[$name]}" "$mbs" "$ratio" "$secs" "$extra"
}

source_run() { # port
    smtp-source -l "$SIZE" -m "$MESSAGES" -s "$SESSIONS" -f from@x -t to@y "127.0.0.1:$1" >/dev/null
}

maildir_count() { find "$1/new" "$1/cur" -type f 2>/dev/null | wc -l; }

bench_sink() {
    local port; port="$(free_port)"
    smtp-sink -u nobody "127.0.0.1:$port" 256 &
    pids+=($!)
    wait_banner "$port" 10 || { echo "sink: smtp-sink not ready" >&2; return 1; }
    local t0 t1; t0="$(now)"; source_run "$port"; t1="$(now)"
    report sink "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" "latency $(latency "$port")"
}

bench_postfix() {
    postfix_dir="$work/postfix"
    local d="$postfix_dir" port; port="$(free_port)"
    mkdir -p "$d"/{etc,queue,data,log,mail}
    chown postfix:postfix "$d/data"
    chown 65534:65534 "$d/mail"
    cat >"$d/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $d/queue
data_directory = $d/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.test
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = $d/log/maillog
maillog_file_prefixes = $d
virtual_mailbox_domains = y
virtual_mailbox_maps = texthash:$d/etc/vmailbox
virtual_mailbox_base = $d/mail
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_mailbox_limit = 0
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
EOF
    echo "to@y to/" >"$d/etc/vmailbox"
    {
        echo "127.0.0.1:$port inet n - n - - smtpd"
        sed -n '/^const MASTER_CF_SERVICES/,/^";/p' "$repo_root/tests/it/postfix.rs" | sed '1d;$d'
    } >"$d/etc/master.cf"
    postfix -c "$d/etc" check
    postfix -c "$d/etc" start >/dev/null
    wait_banner "$port" 15 || { echo "postfix: not ready" >&2; return 1; }
    local t0 t1 n; t0="$(now)"; source_run "$port"
    local deadline=$((SECONDS + 600))
    while n="$(maildir_count "$d/mail/to")"; ((n < MESSAGES)); do
        ((SECONDS < deadline)) || { echo "postfix: only $n of $MESSAGES delivered" >&2; return 1; }
        sleep 0.05
    done
    t1="$(now)"
    report postfix "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" "(until all in the Maildir) latency $(latency "$port")"
}

bench_mailchute() { bench_mailchute_mode sync mailchute; }
bench_mailchute-queued() { bench_mailchute_mode queued mailchute-queued; }

bench_mailchute_mode() { # mode, label
    local mode="$1" label="$2"
    local bin="${CARGO_TARGET_DIR:-$repo_root/target}/release/mailchute"
    (cd "$repo_root" && cargo build --release --bin mailchute) >&2
    local d="$work/$label" port; port="$(free_port)"
    mkdir -p "$d"
    cat >"$d/mailchute.toml" <<EOF
[server]
hostname = "bench.test"
data_dir = "./data"
sync_method = "${BENCH_SYNC:-fsync}"

[[listener]]
name = "mx"
address = "127.0.0.1:$port"
protocol = "smtp"
mode = "$mode"
max_recipients = 1000

[[route]]
name = "all"
match = ["*"]
sinks = ["box"]

[sink.box]
type = "maildir"
path = "./Maildir"
EOF
    "$bin" serve -c "$d/mailchute.toml" 2>"$d/mailchute.log" &
    local pid=$!
    pids+=("$pid")
    if ! wait_banner "$port" 15; then
        echo "mailchute: not ready (skipped); log:" >&2
        tail -20 "$d/mailchute.log" >&2
        return 0
    fi
    local t0 t1 n; t0="$(now)"; source_run "$port"
    # queued: the clock stops when the last message is in the Maildir, as for Postfix.
    local deadline=$((SECONDS + 600))
    while n="$(maildir_count "$d/Maildir")"; ((n < MESSAGES)); do
        ((SECONDS < deadline)) || break
        sleep 0.02
    done
    t1="$(now)"
    local hwm; hwm="$(awk '/VmHWM/{print $2" "$3}' "/proc/$pid/status")"
    report "$label" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" \
        "stored=$n peak_rss=$hwm latency $(latency "$port")"
    [[ "$n" -ge "$MESSAGES" ]] || echo "$label: WARNING only $n of $MESSAGES in the Maildir" >&2
}

echo "messages=$MESSAGES size=$SIZE sessions=$SESSIONS"
# smtp-sink first: the others are reported as a ratio to it.
for t in sink postfix mailchute mailchute-queued; do
    # `if`, not `&&`: a target left out must not become the script's exit status.
    if [[ " ${targets[*]} " == *" $t "* ]]; then "bench_$t"; fi
done
