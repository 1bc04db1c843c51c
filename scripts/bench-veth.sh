#!/usr/bin/env bash
# Runs metalbond-bench against a route server across a veth pair with a
# 1500-byte MTU and segmentation offloads off, between two network
# namespaces this script creates (and removes): the server in one, the
# benchmark's peers in the other, so TCP cuts the byte stream into 1448-byte
# segments as a datacenter network does. Needs root, iproute2 and ethtool.
#
#   scripts/bench-veth.sh [--no-pace-v1] -- [metalbond-bench flags]
#   scripts/bench-veth.sh -- -scenario fanout -repeat 3
#   scripts/bench-veth.sh --no-pace-v1 -- -scenario join -repeat 3
set -euo pipefail
cd "$(dirname "$0")/.."

server_flags=()
while [ $# -gt 0 ]; do
	case "$1" in
	--) shift; break ;;
	--no-pace-v1) server_flags+=(--no-pace-v1); shift ;;
	*) echo "usage: $0 [--no-pace-v1] -- [metalbond-bench flags]" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "$0: needs root (network namespaces)" >&2; exit 1; }
for tool in ip ethtool; do
	command -v "$tool" >/dev/null || { echo "$0: $tool is not installed" >&2; exit 1; }
done

tmp=$(mktemp -d)
a=mbbench-a-$$ b=mbbench-b-$$
cleanup() {
	[ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
	ip netns del "$a" 2>/dev/null || true
	ip netns del "$b" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

go build -o "$tmp/metalbond" ./cmd/metalbond
go build -o "$tmp/metalbond-bench" ./cmd/metalbond-bench

ip netns add "$a"
ip netns add "$b"
ip -n "$a" link add veth0 mtu 1500 type veth peer name veth0 netns "$b" mtu 1500
for ns in "$a" "$b"; do
	ip netns exec "$ns" ethtool -K veth0 tso off gso off gro off >/dev/null
	ip -n "$ns" link set lo up
done
ip -n "$a" addr add fd00:7e57::1/64 dev veth0 nodad
ip -n "$b" addr add fd00:7e57::2/64 dev veth0 nodad
ip -n "$a" link set veth0 up
ip -n "$b" link set veth0 up

ip netns exec "$a" "$tmp/metalbond" server --listen '[fd00:7e57::1]:4711' "${server_flags[@]}" >"$tmp/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
	ip netns exec "$b" bash -c 'exec 3<>/dev/tcp/fd00:7e57::1/4711' 2>/dev/null && break
	sleep 0.05
done
ip netns exec "$b" "$tmp/metalbond-bench" -server '[fd00:7e57::1]:4711' -server-pid "$server_pid" "$@"
