// Package pb holds the protobuf schema of MetalBond v1 message bodies
// (metalbond.proto) and the Go code generated from it.
//
// metalbond.pb.go is generated code: never edit it by hand. Change the
// schema and run go generate with protoc and protoc-gen-go on PATH.
// Package wire uses these types as its reference codec; its hot path
// encodes and decodes Update bodies directly.
package pb

//go:generate protoc --go_out=. --go_opt=paths=source_relative metalbond.proto
