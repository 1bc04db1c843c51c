package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

type flags struct {
	fs      *pflag.FlagSet
	listen  string
	servers []string
	verbose bool
}

func newFlags(args ...string) *flags {
	f := &flags{fs: pflag.NewFlagSet("test", pflag.ContinueOnError)}
	f.fs.StringVar(&f.listen, "listen", "[::]:4711", "")
	f.fs.StringSliceVar(&f.servers, "server", []string{"default:1"}, "")
	f.fs.BoolVarP(&f.verbose, "verbose", "v", false, "")
	f.fs.String("config", "", "")
	if err := f.fs.Parse(args); err != nil {
		panic(err)
	}
	return f
}

func write(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "metalbond.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestApply(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		file    string
		listen  string
		servers []string
		verbose bool
	}{
		{"empty file", nil, "", "[::]:4711", []string{"default:1"}, false},
		{"comments only", nil, "# nothing\n", "[::]:4711", []string{"default:1"}, false},
		{"scalars", nil, "listen: \"[::1]:1\"\nverbose: true\n", "[::1]:1", []string{"default:1"}, true},
		{"list replaces default", nil, "server: [a:1, b:2]\n", "[::]:4711", []string{"a:1", "b:2"}, false},
		{"scalar for a list splits like the flag", nil, "server: a:1,b:2\n", "[::]:4711", []string{"a:1", "b:2"}, false},
		{"block list", nil, "server:\n  - a:1\n  - b:2\n", "[::]:4711", []string{"a:1", "b:2"}, false},
		{"flags win", []string{"--server", "c:3", "--listen", "x:1"}, "server: [a:1]\nlisten: y:2\nverbose: true\n", "x:1", []string{"c:3"}, true},
		{"verbose false in file", nil, "verbose: false\n", "[::]:4711", []string{"default:1"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFlags(tt.args...)
			if err := Apply(f.fs, write(t, tt.file), "config"); err != nil {
				t.Fatal(err)
			}
			if f.listen != tt.listen || !slices.Equal(f.servers, tt.servers) || f.verbose != tt.verbose {
				t.Errorf("listen %q servers %q verbose %v; want %q %q %v", f.listen, f.servers, f.verbose, tt.listen, tt.servers, tt.verbose)
			}
		})
	}
}

func TestApplyErrors(t *testing.T) {
	tests := []struct{ name, file, want string }{
		{"unknown keys", "listen: a:1\nlisten-addr: b\nservers: [x]\n", `unknown keys "listen-addr" (line 2), "servers" (line 3)`},
		{"skipped key", "config: other.yaml\n", `unknown keys "config" (line 1)`},
		{"shorthand is not a key", "v: true\n", `unknown keys "v" (line 1)`},
		{"duplicate", "listen: a:1\nlisten: b:2\n", `line 2: key "listen" repeats line 1`},
		{"list for scalar", "listen: [a, b]\n", "listen takes a single value"},
		{"mapping value", "listen: {a: b}\n", "want a value or a list"},
		{"null value", "listen:\n", "listen: missing value"},
		{"nested list", "server: [[a]]\n", "want a list of plain values"},
		{"not a mapping", "[a, b]\n", "want a mapping"},
		{"bad bool", "verbose: maybe\n", "verbose"},
		{"syntax", "listen: \"unterminated\n", "yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFlags()
			err := Apply(f.fs, write(t, tt.file), "config")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
	if err := Apply(newFlags().fs, filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("no error for a missing file")
	}
}

func TestApplyMarksChanged(t *testing.T) {
	f := newFlags()
	if err := Apply(f.fs, write(t, "listen: a:1\n"), "config"); err != nil {
		t.Fatal(err)
	}
	if !f.fs.Changed("listen") || f.fs.Changed("server") {
		t.Errorf("Changed: listen %v server %v", f.fs.Changed("listen"), f.fs.Changed("server"))
	}
}
