#!/usr/bin/env bash
# Builds the two container images as OCI archives with buildah (no daemon,
# vfs storage in dist/build/containers); scripts/dist.sh calls it with
# VERSION, BINARY (the static binary), GOARCH and SOURCE_DATE_EPOCH set.
#   dist/metalbond-VERSION.oci.tar       FROM scratch: the binary at /usr/bin/metalbond,
#                                        CA certificates, user 65532; runs the server
#   dist/metalbond-host-VERSION.oci.tar  Debian (mmdebstrap) with bash, iproute2,
#                                        ethtool; the binary at /usr/sbin and /usr/bin
# Needs root and the Debian packages buildah, mmdebstrap, ca-certificates.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${VERSION:?}" "${BINARY:?}" "${GOARCH:?}" "${SOURCE_DATE_EPOCH:?}"

for cmd in buildah mmdebstrap; do
	command -v $cmd >/dev/null || {
		echo "dist-images.sh: $cmd not found: apt-get install buildah mmdebstrap" >&2
		exit 1
	}
done
cacerts=/etc/ssl/certs/ca-certificates.crt
[ -s $cacerts ] || {
	echo "dist-images.sh: $cacerts missing: apt-get install ca-certificates" >&2
	exit 1
}

# An image tag allows [A-Za-z0-9_.-]: the Debian version's ~ and + become -.
tag=${VERSION//[~+]/-}
store=$PWD/dist/build/containers
B=(buildah --storage-driver vfs --root "$store/root" --runroot "$store/run")
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
labels=(
	--label "org.opencontainers.image.version=$VERSION"
	--label "org.opencontainers.image.source=https://github.com/metalbond/metalbond"
	--label "org.opencontainers.image.revision=$(git rev-parse HEAD)"
	--label "org.opencontainers.image.created=$created"
	--label "org.opencontainers.image.licenses=Apache-2.0"
)
stage=$(mktemp -d dist/build/stage.XXXXXX)
trap 'rm -rf "$stage"' EXIT

# commit writes container $1 as image $2 and its OCI archive $3.
commit() {
	"${B[@]}" commit --quiet --timestamp "$SOURCE_DATE_EPOCH" --rm "$1" "localhost/$2:$tag" >/dev/null
	rm -f "$3"
	"${B[@]}" push --quiet "localhost/$2:$tag" "oci-archive:$3:$2:$tag"
	echo "$3"
}

# (1) metalbond: FROM scratch, for route servers.
root=$stage/server
install -D -m 0755 "$BINARY" "$root/usr/bin/metalbond"
install -D -m 0644 $cacerts "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/:/sbin/nologin\nmetalbond:x:65532:65532:metalbond:/:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nmetalbond:x:65532:\n' >"$root/etc/group"
chmod 0644 "$root/etc/passwd" "$root/etc/group"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
ctr=$("${B[@]}" from --quiet scratch)
"${B[@]}" copy --quiet "$ctr" "$root/" /
"${B[@]}" config --arch "$GOARCH" --os linux --user 65532:65532 --workingdir / \
	--port 4711/tcp --port 4712/tcp \
	--created-by "scripts/dist.sh image" \
	--entrypoint '["/usr/bin/metalbond"]' --cmd '["server", "--listen", "[::]:4711", "--http", "[::]:4712"]' \
	--label "org.opencontainers.image.title=metalbond" \
	--label "org.opencontainers.image.description=MetalBond route server (protocol v1): 4711 for peers, 4712 for the status page, /metrics, /healthz, /readyz" \
	"${labels[@]}" "$ctr"
commit "$ctr" metalbond "dist/metalbond-$VERSION.oci.tar"

# (2) metalbond-host: Debian, for clients that install routes on a host and
# for DaemonSets that run `/bin/bash -c "... /usr/sbin/metalbond client ..."`.
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$suite" ] || {
	echo "dist-images.sh: no VERSION_CODENAME in /etc/os-release: build on Debian" >&2
	exit 1
}
mirror=http://deb.debian.org/debian
mmdebstrap --quiet --variant=essential --architectures="$(dpkg --print-architecture)" \
	--include=bash,iproute2,ethtool,ca-certificates \
	--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
	"$suite" "$stage/host.tar" \
	"deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $mirror-security $suite-security main"
root=$stage/host
install -D -m 0755 "$BINARY" "$root/usr/bin/metalbond"
mkdir -p "$root/usr/sbin"
ln -s ../bin/metalbond "$root/usr/sbin/metalbond"
install -D -m 0644 contrib/etc/rt_protos.conf "$root/etc/iproute2/rt_protos.d/metalbond.conf"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
ctr=$("${B[@]}" from --quiet scratch)
"${B[@]}" add --quiet "$ctr" "$stage/host.tar" /
"${B[@]}" copy --quiet "$ctr" "$root/" /
"${B[@]}" config --arch "$GOARCH" --os linux --user 0:0 --workingdir / \
	--env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	--created-by "scripts/dist.sh image" \
	--cmd '["/bin/bash"]' \
	--label "org.opencontainers.image.title=metalbond-host" \
	--label "org.opencontainers.image.description=MetalBond client for hosts: Debian $suite with bash, iproute2, ethtool; /usr/sbin/metalbond" \
	"${labels[@]}" "$ctr"
commit "$ctr" metalbond-host "dist/metalbond-host-$VERSION.oci.tar"
