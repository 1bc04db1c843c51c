// Package metalbond implements MetalBond, the route distribution system for
// datacenter overlay networks, speaking MetalBond protocol v1.
package metalbond
