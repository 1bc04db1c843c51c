// Package faulttest holds the fault tests of metalbond: route servers and
// clients run as real child processes (the metalbond command, built once per
// test binary) on loopback, and the tests kill, restart and abuse them,
// then check that every surviving peer converges to the exact expected route
// table and that the server's goroutines, memory and file descriptors return
// to their baseline. FuzzSession throws random frame sequences at an
// in-process server.
//
// The package has no API; everything is in its tests. docs/fault-testing.md
// describes each fault, what is checked, the outcomes observed and the
// commands for the short and the long runs.
package faulttest
