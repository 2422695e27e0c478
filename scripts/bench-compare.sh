#!/usr/bin/env bash
# bench-compare.sh: the comparison numbers of PERFORMANCE.md.
#
#   1. mailward's milter front against the bench's in-process no-op milter
#      (mailward-bench milter --baseline), 5 runs, median ratio; then the
#      same for a second mailward with every check and rule off, which
#      shows what the checks cost apart from the milter front.
#   2. rspamd's proxy worker in milter mode (self_scan) on the same driver
#      and the same corpus, 5 runs, median ratio. Skipped when rspamd is
#      not installed; --install installs the package first.
#   3. A private Postfix with mailward attached as its milter against the
#      same Postfix with mailward-bench noop-milter attached, 5 runs each,
#      median throughput and ratio.
#
# Usage: scripts/bench-compare.sh [--install] [--runs N] [--messages N]
#        [--concurrency N] [--keep]
# Environment: BENCH_PORT_BASE (default 25300) picks the loopback ports
# base..base+11, so the script does not collide with a mailward on the
# default ports. Needs root for Postfix and rspamd.
set -euo pipefail

install=0 runs=5 messages=3000 conc=8 keep=0
while [ $# -gt 0 ]; do
	case "$1" in
	--install) install=1 ;;
	--runs) runs=$2; shift ;;
	--messages) messages=$2; shift ;;
	--concurrency) conc=$2; shift ;;
	--keep) keep=1 ;;
	-h|--help) sed -n '2,18p' "$0"; exit 0 ;;
	*) echo "unknown argument: $1" >&2; exit 2 ;;
	esac
	shift
done

repo=$(cd "$(dirname "$0")/.." && pwd)
base=${BENCH_PORT_BASE:-25300}
dns_port=$base
milter_port=$((base + 1))
smtp_port=$((base + 2))
smtp_up_port=$((base + 3))
policy_port=$((base + 4))
rspamd_port=$((base + 5))
rspamd_normal_port=$((base + 6))
rspamd_ctl_port=$((base + 7))
postfix_port=$((base + 8))
sink_port=$((base + 9))
noop_port=$((base + 10))
bare_port=$((base + 11))

for p in $(seq "$base" $((base + 11))); do
	if ss -ltnH "sport = :$p" | grep -q .; then
		echo "port $p is in use; set BENCH_PORT_BASE to a free range" >&2
		exit 1
	fi
done
for tool in go jq ss; do
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

echo "== building" >&2
(cd "$repo" && go build -o "$work/mailward" ./cmd/mailward && go build -o "$work/mailward-bench" ./cmd/mailward-bench)
bench=$work/mailward-bench
corpus=$work/corpus

echo "== corpus and DNS" >&2
"$bench" gen --out "$corpus" --domains 20 --messages 700 --dns "127.0.0.1:$dns_port" >&2
# gen writes the default ports; move every front to this run's ports.
sed -i \
	-e "s/127\.0\.0\.1:8891/127.0.0.1:$milter_port/" \
	-e "s/127\.0\.0\.1:2525/127.0.0.1:$smtp_port/" \
	-e "s/127\.0\.0\.1:2526/127.0.0.1:$smtp_up_port/" \
	-e "s/127\.0\.0\.1:10040/127.0.0.1:$policy_port/" \
	"$corpus/mailward.yaml"
"$bench" dns --corpus "$corpus" --listen "127.0.0.1:$dns_port" 2>"$work/dns.log" &
pids+=($!)
sleep 0.5

echo "== mailward serve" >&2
"$work/mailward" serve --config "$corpus/mailward.yaml" 2>"$work/mailward.log" &
pids+=($!)
wait_port "127.0.0.1:$milter_port" 20

# drive NAME ADDR: runs the milter driver with --baseline $runs times and
# keeps each JSON result. The exit status (wrong verdicts) is recorded,
# not fatal: rspamd's verdicts are not mailward's classes.
drive_milter() {
	local name=$1 addr=$2 i rc
	for i in $(seq "$runs"); do
		rc=0
		"$bench" milter --addr "$addr" --corpus "$corpus" --messages "$messages" \
			--concurrency "$conc" --baseline --json >"$work/$name.$i.json" 2>"$work/$name.$i.err" || rc=$?
		jq -r --arg n "$name" --arg i "$i" --arg rc "$rc" \
			'.runs as $r | "\($n) run \($i): baseline \($r[0].messages_per_second|floor) msg/s, \($r[1].messages_per_second|floor) msg/s, ratio \($r[1].ratio_to_baseline*100|round/100), errors \($r[1].errors), wrong \(([$r[1].total[]]|add) - ([$r[1].right[]]|add // 0)), exit \($rc)"' \
			"$work/$name.$i.json" >&2
	done
}
summary() { # name
	local f=("$work/$1".*.json)
	printf '%s: median of %d: baseline %s msg/s, %s msg/s, ratio %s\n' "$1" "$runs" \
		"$(jq '.runs[0].messages_per_second' "${f[@]}" | median | xargs printf '%.0f')" \
		"$(jq '.runs[1].messages_per_second' "${f[@]}" | median | xargs printf '%.0f')" \
		"$(jq '.runs[1].ratio_to_baseline' "${f[@]}" | median | xargs printf '%.2f')"
}

echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "== mailward milter vs no-op milter" >&2
drive_milter mailward "127.0.0.1:$milter_port"

echo "== mailward with every check and rule off vs no-op milter" >&2
cat >"$work/bare.yaml" <<EOF
hostname: mx.bench.test
milter:
  listen: inet:127.0.0.1:$bare_port
admin:
  listen: ""
dns:
  servers: ["127.0.0.1:$dns_port"]
spf: {enable: false}
iprev: {enable: false}
dkim: {enable: false}
dmarc: {enable: false}
log:
  level: warn
EOF
"$work/mailward" serve --config "$work/bare.yaml" 2>"$work/bare.log" &
bare_pid=$!
pids+=($bare_pid)
wait_port "127.0.0.1:$bare_port" 20
drive_milter bare "127.0.0.1:$bare_port"
kill "$bare_pid"

echo "== rspamd" >&2
rspamd_done=0
if ! command -v rspamd >/dev/null && [ "$install" = 1 ]; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y rspamd >&2
fi
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
	if wait_port "127.0.0.1:$rspamd_port" 60; then
		# One message first so that rspamd's lazy start-up (maps, regexp
		# cache) is not in the first timed run.
		"$bench" milter --addr "127.0.0.1:$rspamd_port" --corpus "$corpus" --messages 50 --concurrency 1 --json >/dev/null 2>&1 || true
		drive_milter rspamd "127.0.0.1:$rspamd_port"
		rspamd_done=1
	else
		tail -20 "$rs/log/rspamd.log" >&2 || true
	fi
else
	echo "rspamd is not installed (use --install): skipped" >&2
fi

echo "== Postfix with mailward vs Postfix with the no-op milter" >&2
postfix_done=0
if command -v postfix >/dev/null && command -v smtp-sink >/dev/null && [ "$(id -u)" = 0 ]; then
	"$bench" noop-milter --listen "127.0.0.1:$noop_port" 2>"$work/noop.log" &
	pids+=($!)
	wait_port "127.0.0.1:$noop_port" 10
	# Postfix relays everything here; smtp-sink accepts and drops it.
	smtp-sink -u postfix "127.0.0.1:$sink_port" 1000 2>"$work/sink.log" &
	pids+=($!)
	wait_port "127.0.0.1:$sink_port" 10

	pf=$work/postfix
	mkdir -p "$pf/etc" "$pf/queue" "$pf/data"
	chown postfix "$pf/data"
	postfix_dirs+=("$pf")
	write_postfix() { # milter address
		sed -e "s|@DIR@|$pf|g" -e "s|@SINK@|[127.0.0.1]:$sink_port|" -e "s|@MILTER@|inet:$1|" \
			"$repo/scripts/bench/postfix/main.cf" >"$pf/etc/main.cf"
		sed -e "s|@LISTEN@|127.0.0.1:$postfix_port|" "$repo/scripts/bench/postfix/master.cf" >"$pf/etc/master.cf"
	}
	drive_postfix() { # name
		local name=$1 i rc
		for i in $(seq "$runs"); do
			rc=0
			"$bench" smtp --addr "127.0.0.1:$postfix_port" --xclient --corpus "$corpus" \
				--messages "$messages" --concurrency "$conc" --json >"$work/$name.$i.json" 2>"$work/$name.$i.err" || rc=$?
			jq -r --arg n "$name" --arg i "$i" --arg rc "$rc" \
				'.runs[0] as $r | "\($n) run \($i): \($r.messages_per_second|floor) msg/s, errors \($r.errors), wrong \(([$r.total[]]|add) - ([$r.right[]]|add // 0)), exit \($rc)"' \
				"$work/$name.$i.json" >&2
		done
	}
	for which in noop mailward; do
		if [ "$which" = noop ]; then m=127.0.0.1:$noop_port; else m=127.0.0.1:$milter_port; fi
		write_postfix "$m"
		rm -rf "$pf/queue"/*
		postfix -c "$pf/etc" start >&2
		wait_port "127.0.0.1:$postfix_port" 20
		# master listens before smtpd has read its settings: one greeting
		# proves smtpd starts.
		if ! timeout 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$postfix_port; head -c 3 <&3" | grep -q 220; then
			tail -5 "$pf/maillog" >&2
			exit 1
		fi
		drive_postfix "postfix-$which"
		postfix -c "$pf/etc" stop >&2
		sleep 1
	done
	postfix_done=1
else
	echo "Postfix needs postfix, smtp-sink and root: skipped" >&2
fi

echo
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
echo "milter driver: $messages messages, concurrency $conc, median of $runs runs"
summary mailward
summary bare
echo "  (bare: mailward with every check and rule off; its verdicts are not judged)"
if [ "$rspamd_done" = 1 ]; then
	summary rspamd
	echo "  (rspamd's verdicts are not judged: its classes are not mailward's)"
else
	echo "rspamd: not run"
fi
if [ "$postfix_done" = 1 ]; then
	n=$(jq '.runs[0].messages_per_second' "$work"/postfix-noop.*.json | median)
	w=$(jq '.runs[0].messages_per_second' "$work"/postfix-mailward.*.json | median)
	printf 'postfix: median of %d: with no-op milter %.0f msg/s, with mailward %.0f msg/s, ratio %.2f\n' \
		"$runs" "$n" "$w" "$(awk -v w="$w" -v n="$n" 'BEGIN {print w / n}')"
	printf '  verdicts wrong per mailward run: %s\n' "$(jq -r '([.runs[0].total[]]|add) - ([.runs[0].right[]]|add // 0)' "$work"/postfix-mailward.*.json | xargs)"
else
	echo "postfix: not run"
fi
