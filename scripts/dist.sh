#!/usr/bin/env bash
# Builds the release artefacts into dist/:
#   scripts/dist.sh deb     dist/metalbond_VERSION_ARCH.deb
#   scripts/dist.sh image   dist/metalbond-VERSION.oci.tar (FROM scratch, route servers)
#                           dist/metalbond-host-VERSION.oci.tar (Debian, clients on hosts)
#   scripts/dist.sh         both
# VERSION comes from `git describe --tags --always --dirty`, made a Debian
# version (tools/dist); the binary reports it with --version. Every file
# gets the time of the last commit (SOURCE_DATE_EPOCH): two builds of one
# commit give the same .deb, byte for byte.
# Needs Go; for images buildah, mmdebstrap and ca-certificates (Debian
# packages), run as root. GOARCH picks another architecture.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

what=${1:-all}
case $what in
deb | image | all) ;;
*)
	echo "dist.sh: unknown target \"$what\": want deb, image or nothing (both)" >&2
	exit 2
	;;
esac

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
goarch=${GOARCH:-$(go env GOARCH)}
mkdir -p dist/build
tool=dist/build/dist-tool
# Not -trimpath: the tool is not shipped, and so it reuses what go vet
# compiled of nfpm in scripts/test-dist.sh.
(cd tools/dist && go build -o ../../"$tool" .)
version=$("$tool" version --describe "$(git describe --tags --always --dirty)" --time "$SOURCE_DATE_EPOCH")
binary=dist/build/metalbond-linux-$goarch
CGO_ENABLED=0 GOOS=linux GOARCH=$goarch go build -trimpath -buildvcs=false \
	-ldflags "-s -w -X main.version=$version" -o "$binary" ./cmd/metalbond
echo "metalbond $version ($goarch), SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"

if [ "$what" != image ]; then
	"$tool" deb --version "$version" --goarch "$goarch" --binary "$binary" \
		--repo . --time "$SOURCE_DATE_EPOCH" --out dist
fi
if [ "$what" != deb ]; then
	VERSION=$version BINARY=$binary GOARCH=$goarch scripts/dist-images.sh
fi
