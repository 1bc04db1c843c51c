// Command dist builds the release artefacts of metalbond that need Go code:
// the Debian package (with nfpm as a library) and the version string.
// scripts/dist.sh runs it; it is a module of its own so that nfpm's
// dependencies stay out of the library's go.mod.
//
//	dist version --describe "$(git describe --tags --always --dirty)" --time EPOCH
//	dist deb --version V --goarch amd64 --binary PATH --repo DIR --time EPOCH --out DIR
//
// Bad arguments exit with status 2 and a message naming the value.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/metalbond/metalbond/tools/dist/internal/debversion"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// usageError marks a malformed command line (exit status 2).
type usageError struct{ error }

func run(args []string, stdout, stderr io.Writer) int {
	err := dispatch(args, stdout, stderr)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "dist: %v\n", err)
	if errors.As(err, new(usageError)) {
		return 2
	}
	return 1
}

func dispatch(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{errors.New("missing command: want version or deb")}
	}
	fs := flag.NewFlagSet("dist "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	epoch := fs.String("time", "", "time of the commit built, in seconds since 1970 (SOURCE_DATE_EPOCH)")
	switch args[0] {
	case "version":
		describe := fs.String("describe", "", "output of git describe --tags --always --dirty")
		if err := fs.Parse(args[1:]); err != nil {
			return usageError{err}
		}
		t, err := parseEpoch(*epoch)
		if err != nil {
			return err
		}
		v, err := debversion.FromDescribe(*describe, t)
		if err != nil {
			return usageError{err}
		}
		fmt.Fprintln(stdout, v)
		return nil
	case "deb":
		var s debSpec
		var goarch, out string
		fs.StringVar(&s.Version, "version", "", "Debian version of the package")
		fs.StringVar(&goarch, "goarch", "", "GOARCH the binary was built for")
		fs.StringVar(&s.Binary, "binary", "", "path of the static metalbond binary")
		fs.StringVar(&s.Repo, "repo", ".", "root of the repository")
		fs.StringVar(&out, "out", "dist", "directory to write metalbond_VERSION_ARCH.deb to")
		if err := fs.Parse(args[1:]); err != nil {
			return usageError{err}
		}
		return buildDeb(s, goarch, *epoch, out, stdout)
	}
	return usageError{fmt.Errorf("unknown command %q: want version or deb", args[0])}
}

func buildDeb(s debSpec, goarch, epoch, out string, stdout io.Writer) error {
	var err error
	if s.MTime, err = parseEpoch(epoch); err != nil {
		return err
	}
	if s.Arch, err = debversion.Arch(goarch); err != nil {
		return usageError{err}
	}
	if !debversion.Valid(s.Version) {
		return usageError{fmt.Errorf("invalid --version %q: not a Debian version", s.Version)}
	}
	if s.Binary == "" {
		return usageError{errors.New("missing --binary")}
	}
	path := filepath.Join(out, fmt.Sprintf("metalbond_%s_%s.deb", s.Version, s.Arch))
	if err := writeDeb(s, path); err != nil {
		return err
	}
	fmt.Fprintln(stdout, path)
	return nil
}

func parseEpoch(s string) (time.Time, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, usageError{fmt.Errorf("invalid --time %q: want seconds since 1970", s)}
	}
	return time.Unix(n, 0).UTC(), nil
}
