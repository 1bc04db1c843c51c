package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/metalbond/metalbond/internal/config"
)

// Exit codes of the command.
const (
	exitOK      = 0
	exitRuntime = 1 // the daemon or query failed while running
	exitUsage   = 2 // malformed command line or configuration
)

// runtimeError marks an error that happened after the command line was
// accepted: the command exits with exitRuntime. Every other error returned
// by the command tree is a usage error (exitUsage).
type runtimeError struct{ err error }

func (e runtimeError) Error() string { return e.err.Error() }
func (e runtimeError) Unwrap() error { return e.err }

// runners are the functions that do the work once a command line has been
// turned into a configuration. Tests replace them to inspect the
// configuration without starting anything.
type runners struct {
	server func(ctx context.Context, cfg serverConfig, log *slog.Logger, stdout io.Writer) error
	client func(ctx context.Context, cfg clientConfig, log *slog.Logger, stdout io.Writer) error
}

var defaultRunners = runners{server: runServer, client: runClient}

// execute runs the command line args and returns the process exit code.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer, r runners) int {
	root := newRootCommand(stdout, stderr, r)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "metalbond: %v\n", err)
	if re := (runtimeError{}); errors.As(err, &re) {
		return exitRuntime
	}
	if cmd == nil {
		cmd = root
	}
	fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	return exitUsage
}

// newRootCommand builds the command tree.
func newRootCommand(stdout, stderr io.Writer, r runners) *cobra.Command {
	root := &cobra.Command{
		Use:   "metalbond",
		Short: "MetalBond route server and client (protocol v1)",
		Long: `MetalBond distributes overlay routes in a datacenter. Hypervisors (clients)
announce the prefixes they host, per virtual network (VNI), with the IPv6
underlay address that reaches them; route servers reflect every announcement
to the clients subscribed to that VNI. A client can install what it learns
into Linux routing tables as IP-in-IPv6 encapsulated routes.

Exit status: 0 after a clean shutdown (SIGINT or SIGTERM), 1 after a runtime
failure, 2 for a malformed command line or configuration file.`,
		Version:       versionString(),
		SilenceErrors: true,
		SilenceUsage:  true,
		// A bare "metalbond" is a usage error; an unknown command is one
		// too (cobra's argument check for the root command).
		RunE: func(*cobra.Command, []string) error {
			return errors.New("missing command: want server, client, peers, routes or version")
		},
	}
	// Our own --version flag: cobra's default would take -v, which the
	// subcommands use for --verbose.
	root.Flags().Bool("version", false, "print the version and exit")
	root.SetVersionTemplate("metalbond {{.Version}}\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return err })
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(
		newServerCommand(r),
		newClientCommand(r),
		newPeersCommand(),
		newRoutesCommand(),
		&cobra.Command{
			Use:   "version",
			Short: "Print the version",
			Args:  cobra.NoArgs,
			Run: func(cmd *cobra.Command, _ []string) {
				fmt.Fprintf(cmd.OutOrStdout(), "metalbond %s (%s, %s/%s)\n", versionString(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			},
		},
	)
	return root
}

// logFlags are the logging flags shared by server and client.
type logFlags struct {
	verbose bool
	format  string
}

func (l *logFlags) register(fs *pflag.FlagSet) {
	fs.BoolVarP(&l.verbose, "verbose", "v", false, "log at debug level, including one line per route change")
	fs.StringVar(&l.format, "log-format", "text", "log `format` on stderr: text or json")
}

// logConfig says how to log.
type logConfig struct {
	Level slog.Level
	JSON  bool
}

func (l *logFlags) config() (logConfig, error) {
	c := logConfig{Level: slog.LevelInfo}
	if l.verbose {
		c.Level = slog.LevelDebug
	}
	switch strings.ToLower(l.format) {
	case "text":
	case "json":
		c.JSON = true
	default:
		return c, fmt.Errorf("invalid --log-format %q: want text or json", l.format)
	}
	return c, nil
}

// newLogger returns the logger described by c, writing to w.
func newLogger(c logConfig, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.Level}
	if c.JSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// runDaemon returns the RunE of a daemon command (server, client): it
// applies the --config file, validates the flags with parse and runs the
// daemon with a logger configured by its Log settings. An error of parse is
// a usage error (exit 2), one of run a runtime error (exit 1).
func runDaemon[C any](configFile *string, parse func() (C, error), logOf func(C) logConfig,
	run func(context.Context, C, *slog.Logger, io.Writer) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		if err := applyConfigFile(cmd, *configFile); err != nil {
			return err
		}
		cfg, err := parse()
		if err != nil {
			return err
		}
		log := newLogger(logOf(cfg), cmd.ErrOrStderr())
		if err := run(cmd.Context(), cfg, log, cmd.OutOrStdout()); err != nil {
			return runtimeError{err}
		}
		return nil
	}
}

// applyConfigFile applies --config, if given, to the flags of cmd that the
// command line did not set.
func applyConfigFile(cmd *cobra.Command, path string) error {
	if path == "" {
		return nil
	}
	if err := config.Apply(cmd.Flags(), path, "config", "help"); err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	return nil
}
