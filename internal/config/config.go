// Package config reads the YAML configuration file of the metalbond command
// (--config FILE) and applies it to the command's flags.
//
// The file is a mapping whose keys are the long names of the command's flags
// and whose values are what the flag would be given on the command line: a
// scalar for a single-valued flag, a scalar or a sequence for a repeatable
// one. A client's file, for example:
//
//	server: ["[2001:db8::10]:4711", "[2001:db8::11]:4711"]
//	subscribe: [23, 24]
//	announce:
//	  - 23#10.0.23.0/24#2001:db8::1
//	install-routes: ["23#100"]
//	tun: overlay-tun
//	keepalive: 5
//	http: "[::1]:4712"
//	log-format: json
//
// Because keys are flag names by construction, the file can set everything
// the flags set and nothing else. A flag given on the command line overrides
// the file. Keys that are not flags are an error that names each of them
// with its line.
package config

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// Apply reads the YAML file at path and sets every flag of fs that it names
// and that was not given on the command line (fs.Changed). Flags named in
// skip (such as "config" itself, or "help") cannot be set from the file.
//
// Values are passed to the flag's Set method as text, exactly as if they had
// been typed on the command line, so the command validates them in one place
// whatever their source. Unknown keys are reported before any flag is set;
// after a later error fs may be partly changed, and the caller should give
// up.
func Apply(fs *pflag.FlagSet, path string, skip ...string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	settings, err := Parse(data, fs, skip...)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, s := range settings {
		if fs.Changed(s.Flag) {
			continue // the command line wins
		}
		f := fs.Lookup(s.Flag)
		if err := set(f, s.Values); err != nil {
			return fmt.Errorf("%s:%d: %s: %w", path, s.Line, s.Flag, err)
		}
		// Mark the flag as set (pflag does so in Set) so that callers can
		// tell configured values from defaults.
		f.Changed = true
	}
	return nil
}

// Setting is one key of a configuration file.
type Setting struct {
	// Flag is the long name of the flag the key sets.
	Flag string
	// Values are the flag's values as text: one for a scalar, one per
	// element for a sequence.
	Values []string
	// Line is the key's line in the file, for error messages.
	Line int
}

// Parse decodes a configuration file and checks each key against the flags
// of fs (minus skip), without changing fs. It reports all unknown keys in one
// error, and refuses sequences for flags that take a single value.
func Parse(data []byte, fs *pflag.FlagSet, skip ...string) ([]Setting, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, nil // empty file
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil, nil // a file of comments only
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: want a mapping of flag names to values", root.Line)
	}
	var (
		out     []Setting
		unknown []string
		seen    = map[string]int{}
	)
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		name := k.Value
		f := fs.Lookup(name)
		if k.Kind != yaml.ScalarNode || f == nil || slices.Contains(skip, name) {
			unknown = append(unknown, fmt.Sprintf("%q (line %d)", name, k.Line))
			continue
		}
		if prev, dup := seen[name]; dup {
			return nil, fmt.Errorf("line %d: key %q repeats line %d", k.Line, name, prev)
		}
		seen[name] = k.Line
		s := Setting{Flag: name, Line: k.Line}
		switch v.Kind {
		case yaml.ScalarNode:
			if v.Tag == "!!null" {
				return nil, fmt.Errorf("line %d: %s: missing value", v.Line, name)
			}
			s.Values = []string{v.Value}
		case yaml.SequenceNode:
			if !repeatable(f) {
				return nil, fmt.Errorf("line %d: %s takes a single value, not a list", v.Line, name)
			}
			for _, e := range v.Content {
				if e.Kind != yaml.ScalarNode || e.Tag == "!!null" {
					return nil, fmt.Errorf("line %d: %s: want a list of plain values", e.Line, name)
				}
				s.Values = append(s.Values, e.Value)
			}
		default:
			return nil, fmt.Errorf("line %d: %s: want a value or a list of values", v.Line, name)
		}
		out = append(out, s)
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("unknown keys %s: keys are the long names of the command's flags", strings.Join(unknown, ", "))
	}
	return out, nil
}

// repeatable reports whether f accepts several values (a slice flag).
func repeatable(f *pflag.Flag) bool {
	_, ok := f.Value.(pflag.SliceValue)
	return ok
}

// set gives f its values. A scalar goes through Set, exactly like one use of
// the flag on the command line (a slice flag then splits it at commas and
// drops its default); a list replaces the values of a slice flag.
func set(f *pflag.Flag, values []string) error {
	if len(values) == 1 {
		return f.Value.Set(values[0])
	}
	sv, ok := f.Value.(pflag.SliceValue)
	if !ok {
		return errors.New("takes a single value")
	}
	return sv.Replace(values)
}
