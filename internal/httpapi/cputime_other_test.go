//go:build !unix

package httpapi

import "time"

// processCPU returns 0: CPU time is only measured on Unix.
func processCPU() time.Duration { return 0 }
