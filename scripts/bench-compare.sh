#!/usr/bin/env bash
# bench-compare.sh: the comparison numbers of PERFORMANCE.md.
#
# Every server under test runs as its own process for the whole script,
# and the runs are interleaved: in each round every server gets one run
# (A, B, C..., then A, B, C... again), so a change of load on the machine
# moves all of them alike. Each run sends messages its server has not
# seen (round r sends the corpus's messages r*N to r*N+N-1), so no
# verdict comes from a cache unless --corpus makes the corpus smaller
# than the runs need, which the summary then says. Beside throughput,
# each run reports the CPU seconds per message the server's processes
# used (utime+stime from /proc/PID/stat): on a shared machine that is far
# steadier than throughput.
#
#   1. Milter front, driven directly (mailward-bench milter): the bench's
#      go-milter no-op (mailward-bench noop-milter, its own process),
#      mailward with every check on, mailward with every check and rule
#      off, and rspamd's proxy worker in milter mode (self_scan). rspamd
#      is skipped with a message when it is not installed; --install
#      installs the Debian package first. Beside them, mailward with
#      content scanning off (content.enabled: false), to price reading
#      the message's text and links; --html F makes that fraction of the
#      corpus newsletters (multipart/alternative, quoted-printable text
#      and HTML with links) instead of short plain text.
#   2. A private Postfix with mailward attached against a second private
#      Postfix with the no-op milter attached, driven over SMTP with
#      XCLIENT, interleaved the same way.
#
# Usage: scripts/bench-compare.sh [--install] [--runs N] [--messages N]
#        [--postfix-messages N] [--concurrency N] [--corpus N] [--html F] [--keep]
# Defaults: 5 runs, 3000 messages per milter run, 1000 per Postfix run,
# concurrency 8, a corpus of runs x messages, --html 0. Environment:
# BENCH_PORT_BASE (default 25300) picks the loopback ports base..base+15.
# Needs root for Postfix and rspamd.
set -euo pipefail

install=0 runs=5 messages=3000 pf_messages=1000 conc=8 keep=0 corpus_size=0 html=0
while [ $# -gt 0 ]; do
	case "$1" in
	--install) install=1 ;;
	--runs) runs=$2; shift ;;
	--messages) messages=$2; shift ;;
	--postfix-messages) pf_messages=$2; shift ;;
	--concurrency) conc=$2; shift ;;
	--corpus) corpus_size=$2; shift ;;
	--html) html=$2; shift ;;
	--keep) keep=1 ;;
	-h|--help) sed -n '2,35p' "$0"; exit 0 ;;
	*) echo "unknown argument: $1" >&2; exit 2 ;;
	esac
	shift
done
need=$((runs * (messages > pf_messages ? messages : pf_messages)))
[ "$corpus_size" = 0 ] && corpus_size=$need
if [ "$corpus_size" -lt "$need" ]; then
	cache_note="corpus of $corpus_size messages for $need per server: messages repeat, so verdict-cache hits are included"
else
	cache_note="unique messages: every server saw each message once (corpus of $corpus_size), no verdict-cache hits"
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
base=${BENCH_PORT_BASE:-25300}
dns_port=$base
milter_port=$((base + 1))
bare_port=$((base + 2))
noop_port=$((base + 3))
rspamd_port=$((base + 4))
rspamd_normal_port=$((base + 5))
rspamd_ctl_port=$((base + 6))
pf_milter_port=$((base + 7))
pf_mw_port=$((base + 8))
pf_noop_port=$((base + 9))
sink_port=$((base + 10))
nocontent_port=$((base + 11))

for p in $(seq "$base" $((base + 15))); do
	if ss -ltnH "sport = :$p" | grep -q .; then
		echo "port $p is in use; set BENCH_PORT_BASE to a free range" >&2
		exit 1
	fi
done
for tool in go jq ss awk; do
	command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done

# Postfix's unprivileged processes must reach its directories: the top
# directory is world-traversable.
work=$(mktemp -d /tmp/mailward-compare-XXXXXX)
chmod 755 "$work"
pids=()
postfix_dirs=()
cleanup() {
	for d in "${postfix_dirs[@]}"; do
		postfix -c "$d/etc" stop >/dev/null 2>&1 || true
	done
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	if [ "$keep" = 1 ]; then
		echo "kept $work" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

wait_port() { # host:port seconds
	local i
	for i in $(seq $(($2 * 10))); do
		if (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "nothing listens on $1 after $2 s" >&2
	return 1
}

median() { # numbers on stdin
	sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "n/a"; exit} if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'
}

# ticks PID...: CPU clock ticks (utime+stime) used so far by the
# processes and, for a process that forks workers (rspamd), its children.
# The command name in /proc/PID/stat may hold spaces: count fields from
# the closing parenthesis.
ticks() {
	local p c t=0
	for p in "$@"; do
		for c in $p $(cat "/proc/$p/task/$p/children" 2>/dev/null); do
			[ -r "/proc/$c/stat" ] || continue
			t=$((t + $(sed 's/^.*) //' "/proc/$c/stat" | awk '{print $12 + $13}')))
		done
	done
	echo "$t"
}
hz=$(getconf CLK_TCK)

echo "== building" >&2
(cd "$repo" && go build -o "$work/mailward" ./cmd/mailward && go build -o "$work/mailward-bench" ./cmd/mailward-bench)
bench=$work/mailward-bench
corpus=$work/corpus

echo "== corpus of $corpus_size messages and its DNS" >&2
"$bench" gen --out "$corpus" --domains 20 --messages "$corpus_size" --html "$html" --dns "127.0.0.1:$dns_port" >&2
"$bench" dns --corpus "$corpus" --listen "127.0.0.1:$dns_port" 2>"$work/dns.log" &
pids+=($!)
wait_port "127.0.0.1:$dns_port" 10

# serve_mailward NAME PORT [bare|nocontent]: a mailward with only the
# milter front on PORT, the corpus's config otherwise (bare: every check
# and rule off; nocontent: content scanning off).
serve_mailward() {
	local name=$1 port=$2
	# Beside gen's config: paths in it are relative to its directory.
	local cfg=$corpus/bench-$name.yaml
	if [ "${3:-}" = bare ]; then
		cat >"$cfg" <<EOF
hostname: mx.bench.test
milter:
  listen: inet:127.0.0.1:$port
admin:
  listen: ""
dns:
  servers: ["127.0.0.1:$dns_port"]
spf: {enable: false}
iprev: {enable: false}
dkim: {enable: false}
dmarc: {enable: false}
content: {enabled: false}
log:
  level: warn
EOF
	else
		# gen's config with the SMTP and policy fronts left out.
		awk '/^[a-z]/ {skip = ($1 == "smtp:" || $1 == "policy:")} /^#/ {next} !skip' "$corpus/mailward.yaml" |
			sed -E "s/listen: inet:127\.0\.0\.1:[0-9]+/listen: inet:127.0.0.1:$port/" >"$cfg"
		if [ "${3:-}" = nocontent ]; then printf 'content:\n  enabled: false\n' >>"$cfg"; fi
	fi
	"$work/mailward" serve --config "$cfg" 2>"$work/$name.log" &
	pids+=($!)
	eval "pid_$name=$!"
	wait_port "127.0.0.1:$port" 20
}

echo "== servers" >&2
serve_mailward mailward "$milter_port"
serve_mailward bare "$bare_port" bare
serve_mailward nocontent "$nocontent_port" nocontent
"$bench" noop-milter --listen "127.0.0.1:$noop_port" 2>"$work/noop.log" &
pids+=($!)
pid_noop=$!
wait_port "127.0.0.1:$noop_port" 10

milter_targets="noop mailward nocontent bare"
declare -A addr=([noop]=127.0.0.1:$noop_port [mailward]=127.0.0.1:$milter_port [bare]=127.0.0.1:$bare_port [nocontent]=127.0.0.1:$nocontent_port)
if ! command -v rspamd >/dev/null && [ "$install" = 1 ]; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y rspamd >&2 ||
		{ apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y rspamd >&2; }
fi
rspamd_version=
if command -v rspamd >/dev/null; then
	# rspamd's own tree under the run directory: the packaged defaults,
	# with local.d/override.d from here. The system service is not used.
	rs=$work/rspamd
	mkdir -p "$rs/local.d" "$rs/override.d" "$rs/db" "$rs/run" "$rs/log"
	sed -e "s/@DNS@/127.0.0.1:$dns_port/" "$repo/scripts/bench/rspamd/options.inc" >"$rs/local.d/options.inc"
	sed -e "s/@LISTEN@/127.0.0.1:$rspamd_port/" "$repo/scripts/bench/rspamd/worker-proxy.inc" >"$rs/override.d/worker-proxy.inc"
	echo "bind_socket = \"127.0.0.1:$rspamd_normal_port\";" >"$rs/override.d/worker-normal.inc"
	echo "bind_socket = \"127.0.0.1:$rspamd_ctl_port\";" >"$rs/override.d/worker-controller.inc"
	cp "$repo"/scripts/bench/rspamd/disabled/*.conf "$rs/local.d/"
	rspamd -f -u root -g root -i -c /etc/rspamd/rspamd.conf \
		--var="LOCAL_CONFDIR=$rs" --var="DBDIR=$rs/db" --var="RUNDIR=$rs/run" --var="LOGDIR=$rs/log" \
		>"$rs/log/stdout" 2>&1 &
	pids+=($!)
	pid_rspamd=$!
	if wait_port "127.0.0.1:$rspamd_port" 60; then
		# Warm-up, so that rspamd's lazy start (maps, regexp cache) is
		# not in the first timed run; these messages are not timed.
		"$bench" milter --addr "127.0.0.1:$rspamd_port" --corpus "$corpus" --messages 50 --concurrency 1 --json >/dev/null 2>&1 || true
		milter_targets="$milter_targets rspamd"
		addr[rspamd]=127.0.0.1:$rspamd_port
		rspamd_version=$(rspamd --version 2>/dev/null | head -1)
	else
		tail -20 "$rs/log/rspamd.log" >&2 || true
		echo "rspamd did not start: skipped" >&2
	fi
else
	echo "rspamd is not installed (use --install to install the Debian package): skipped" >&2
fi

# run_one KIND NAME ROUND ADDR PID OFFSET COUNT [--xclient]: one driver
# run, its JSON kept with the server's CPU ticks added; one line to stderr.
run_one() {
	local kind=$1 name=$2 r=$3 a=$4 pid=$5 off=$6 n=$7 rc=0 t0 t1
	shift 7
	t0=$(ticks "$pid")
	"$bench" "$kind" --addr "$a" --corpus "$corpus" --messages "$n" --offset "$off" \
		--concurrency "$conc" --json "$@" >"$work/$name.$r.raw" 2>"$work/$name.$r.err" || rc=$?
	t1=$(ticks "$pid")
	jq --argjson cpu "$(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v n="$n" 'BEGIN {printf "%.4f", (b - a) / hz / n * 1000}')" \
		--argjson rc "$rc" '.runs[0] + {cpu_ms_per_message: $cpu, exit: $rc}' "$work/$name.$r.raw" >"$work/$name.$r.json"
	jq -r --arg n "$name" --arg r "$r" \
		'"\($n) run \($r): \(.messages_per_second|floor) msg/s, CPU \(.cpu_ms_per_message) ms/msg, eom p50 \(.latency_ms.eom.p50) ms, errors \(.errors), wrong \(([.total[]]|add // 0) - ([.right[]]|add // 0)), exit \(.exit)"' \
		"$work/$name.$r.json" >&2
}

echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) at the start" >&2
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== milter front, interleaved: $milter_targets" >&2
for r in $(seq 0 $((runs - 1))); do
	off=$(((r * messages) % corpus_size))
	for t in $milter_targets; do
		pv=pid_$t
		run_one milter "$t" "$r" "${addr[$t]}" "${!pv}" "$off" "$messages"
	done
done

echo "== Postfix with mailward vs Postfix with the no-op milter, interleaved" >&2
postfix_done=0
if command -v postfix >/dev/null && command -v smtp-sink >/dev/null && [ "$(id -u)" = 0 ]; then
	# A mailward of its own, so that the milter runs above left nothing
	# in its caches.
	serve_mailward pfmw "$pf_milter_port"
	smtp-sink -u postfix "127.0.0.1:$sink_port" 1000 2>"$work/sink.log" &
	pids+=($!)
	wait_port "127.0.0.1:$sink_port" 10
	start_postfix() { # name smtpd-port milter-address
		local pf=$work/postfix-$1
		mkdir -p "$pf/etc" "$pf/queue" "$pf/data"
		chown postfix "$pf/data"
		postfix_dirs+=("$pf")
		sed -e "s|@DIR@|$pf|g" -e "s|@SINK@|[127.0.0.1]:$sink_port|" -e "s|@MILTER@|inet:$3|" \
			"$repo/scripts/bench/postfix/main.cf" >"$pf/etc/main.cf"
		sed -e "s|@LISTEN@|127.0.0.1:$2|" "$repo/scripts/bench/postfix/master.cf" >"$pf/etc/master.cf"
		postfix -c "$pf/etc" start >&2
		wait_port "127.0.0.1:$2" 20
		# master listens before smtpd has read its settings: one greeting
		# proves smtpd starts.
		if ! timeout 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$2; head -c 3 <&3" | grep -q 220; then
			tail -5 "$pf/maillog" >&2
			exit 1
		fi
	}
	start_postfix noop "$pf_noop_port" "127.0.0.1:$noop_port"
	start_postfix mailward "$pf_mw_port" "127.0.0.1:$pf_milter_port"
	for r in $(seq 0 $((runs - 1))); do
		off=$(((r * pf_messages) % corpus_size))
		run_one smtp postfix-noop "$r" "127.0.0.1:$pf_noop_port" "$pid_noop" "$off" "$pf_messages" --xclient
		run_one smtp postfix-mailward "$r" "127.0.0.1:$pf_mw_port" "$pid_pfmw" "$off" "$pf_messages" --xclient
	done
	postfix_done=1
else
	echo "Postfix needs postfix, smtp-sink and root: skipped" >&2
fi

# med NAME JQ: the median over NAME's runs of a jq expression.
med() { jq -r "$2" "$work/$1".*.json | median; }
wrong() { jq -r '([.total[]]|add // 0) - ([.right[]]|add // 0)' "$work/$1".*.json | xargs; }
# ratio A B: the median over rounds of B's throughput over A's in the same round.
ratio() {
	local r
	for r in $(seq 0 $((runs - 1))); do
		awk -v a="$(jq .messages_per_second "$work/$1.$r.json")" -v b="$(jq .messages_per_second "$work/$2.$r.json")" 'BEGIN {print b / a}'
	done | median
}
cpu_ratio() {
	local r
	for r in $(seq 0 $((runs - 1))); do
		awk -v a="$(jq .cpu_ms_per_message "$work/$1.$r.json")" -v b="$(jq .cpu_ms_per_message "$work/$2.$r.json")" 'BEGIN {if (a > 0) print b / a}'
	done | median
}
line() { # name label
	printf '  %-22s %6.0f msg/s  CPU %.3f ms/msg  eom p50 %.2f ms\n' "$2" \
		"$(med "$1" .messages_per_second)" "$(med "$1" .cpu_ms_per_message)" "$(med "$1" .latency_ms.eom.p50)"
}

echo
echo "machine: $(nproc) cores, load $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end, $(date -u +%FT%TZ)"
echo "$cache_note"
echo "milter front: $messages messages per run, concurrency $conc, median of $runs interleaved rounds"
line noop "no-op milter"
line mailward "mailward"
line nocontent "mailward, content off"
line bare "mailward, all off"
if [[ " $milter_targets " == *" rspamd "* ]]; then
	line rspamd "rspamd"
	echo "  ($rspamd_version; its verdicts are not judged: its classes are not mailward's)"
else
	echo "  rspamd: not run"
fi
printf '  mailward vs no-op: throughput ratio %.2f, CPU per message ratio %.2f; wrong verdicts per run: %s\n' \
	"$(ratio noop mailward)" "$(cpu_ratio noop mailward)" "$(wrong mailward)"
printf '  mailward vs mailward with content off: CPU per message ratio %.2f (corpus: --html %s)\n' \
	"$(cpu_ratio nocontent mailward)" "$html"
printf '  mailward, all off, vs no-op: throughput ratio %.2f, CPU per message ratio %.2f\n' \
	"$(ratio noop bare)" "$(cpu_ratio noop bare)"
if [[ " $milter_targets " == *" rspamd "* ]]; then
	printf '  rspamd vs no-op: throughput ratio %.2f, CPU per message ratio %.2f\n' "$(ratio noop rspamd)" "$(cpu_ratio noop rspamd)"
fi
if [ "$postfix_done" = 1 ]; then
	echo "Postfix: $pf_messages messages per run over SMTP with XCLIENT, concurrency $conc, median of $runs interleaved rounds"
	echo "  (CPU is the milter's process only; eom is the driver's end of data to Postfix's reply)"
	line postfix-noop "with no-op milter"
	line postfix-mailward "with mailward"
	printf '  ratio %.2f; wrong verdicts per mailward run: %s\n' "$(ratio postfix-noop postfix-mailward)" "$(wrong postfix-mailward)"
else
	echo "Postfix: not run"
fi
