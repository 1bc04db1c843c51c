package main

import "runtime/debug"

// version is the program's version. Release builds set it with
//
//	go build -ldflags "-X main.version=v1.2.3" ./cmd/metalbond
//
// Otherwise versionString falls back to the module version recorded by the
// Go toolchain (set when built with go install module@version), or "dev".
var version string

// versionString returns the version to report.
func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
