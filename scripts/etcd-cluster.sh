#!/usr/bin/env bash
# etcd-cluster.sh: a three-member etcd cluster on 127.0.0.1 for tests and
# experiments with `metalbond server --etcd`. Needs the etcd binary (Debian:
# apt-get install etcd-server; tested with 3.4); nothing else but bash.
#
#   etcd-cluster.sh start DIR [BASEPORT]  start members 1-3 with data, logs and pid files
#                                         in DIR; wait until each answers /health; print
#                                         the client endpoints, comma-separated
#   etcd-cluster.sh endpoints DIR         print the client endpoints again
#   etcd-cluster.sh kill DIR N            kill member N (1-3) with SIGKILL, as a crash would
#   etcd-cluster.sh restart DIR N         start member N again on its data; wait for /health
#   etcd-cluster.sh stop DIR              stop every member (SIGTERM, then SIGKILL after 10s)
#
# Member N listens for clients on BASEPORT+2N-2 and for peers on BASEPORT+2N-1
# (default BASEPORT 23790: clients on 23790, 23792, 23794). ETCD overrides the binary.
set -euo pipefail

ETCD=${ETCD:-etcd}

usage() {
	sed -n '2,16p' "$0" >&2
	exit 2
}

die() {
	echo "etcd-cluster.sh: $*" >&2
	exit 1
}

client_port() { echo $(($(cat "$DIR/baseport") + 2 * $1 - 2)); }
peer_port() { echo $(($(cat "$DIR/baseport") + 2 * $1 - 1)); }

endpoints() {
	local out="" n
	for n in 1 2 3; do
		out+="${out:+,}http://127.0.0.1:$(client_port "$n")"
	done
	echo "$out"
}

initial_cluster() {
	local out="" n
	for n in 1 2 3; do
		out+="${out:+,}m$n=http://127.0.0.1:$(peer_port "$n")"
	done
	echo "$out"
}

# alive N: whether member N runs (a killed member may linger as a zombie
# until something reaps it: that counts as dead).
alive() {
	local pid state
	[[ -f "$DIR/m$1.pid" ]] || return 1
	pid=$(cat "$DIR/m$1.pid")
	state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
	[[ -n $state && $state != Z && $state != X ]]
}

start_member() {
	local n=$1
	alive "$n" && die "member $n is already running"
	local c p
	c=$(client_port "$n")
	p=$(peer_port "$n")
	# stdin, stdout and stderr are detached so that callers waiting for our
	# output are not kept waiting by the member.
	"$ETCD" --name "m$n" --data-dir "$DIR/m$n" \
		--listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
		--listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
		--initial-cluster "$(initial_cluster)" --initial-cluster-state new \
		--initial-cluster-token "metalbond-test-$(cat "$DIR/baseport")" \
		--logger zap --log-outputs "$DIR/m$n.log" \
		</dev/null >>"$DIR/m$n.out" 2>&1 &
	echo $! >"$DIR/m$n.pid"
}

# healthy N: whether member N answers /health with "health":"true".
healthy() {
	local c reply
	c=$(client_port "$1")
	reply=$( (exec 3<>"/dev/tcp/127.0.0.1/$c" &&
		printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 &&
		timeout 2 cat <&3) 2>/dev/null) || true
	[[ $reply == *'"health":"true"'* ]]
}

wait_healthy() {
	local n deadline=$((SECONDS + 30))
	for n in "$@"; do
		until healthy "$n"; do
			alive "$n" || die "member $n exited; see $DIR/m$n.log"
			((SECONDS < deadline)) || die "member $n not healthy after 30s; see $DIR/m$n.log"
			sleep 0.2
		done
	done
}

stop_member() {
	local n=$1 pid i
	alive "$n" || return 0
	pid=$(cat "$DIR/m$n.pid")
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		alive "$n" || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
}

member_arg() {
	[[ ${1:-} =~ ^[123]$ ]] || die "member must be 1, 2 or 3, not '${1:-}'"
}

[[ $# -ge 2 ]] || usage
cmd=$1
DIR=$2
case $cmd in
start)
	command -v "$ETCD" >/dev/null || die "$ETCD not found (Debian: apt-get install etcd-server)"
	mkdir -p "$DIR"
	DIR=$(cd "$DIR" && pwd)
	echo "${3:-23790}" >"$DIR/baseport"
	for n in 1 2 3; do start_member "$n"; done
	wait_healthy 1 2 3
	endpoints
	;;
endpoints)
	endpoints
	;;
kill)
	member_arg "${3:-}"
	alive "$3" || die "member $3 is not running"
	kill -KILL "$(cat "$DIR/m$3.pid")"
	while alive "$3"; do sleep 0.05; done
	;;
restart)
	member_arg "${3:-}"
	start_member "$3"
	wait_healthy "$3"
	;;
stop)
	for n in 1 2 3; do stop_member "$n"; done
	;;
*)
	usage
	;;
esac
