// Command objfs formats, mounts and inspects objfs volumes: a POSIX file
// system whose namespace lives in Badger and whose data lives as
// content-addressed blocks in object stores.
package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	_ "github.com/objfs/objfs/objstore/s3" // s3:// store URLs
)

func main() {
	if err := rootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "objfs:", err)
		os.Exit(1)
	}
}

func rootCmd() *cobra.Command {
	var verbose bool
	root := &cobra.Command{
		Use:   "objfs",
		Short: "A POSIX file system over object storage",
		Long: `objfs keeps a volume's namespace, strongly consistent, in an embedded Badger
database and its file data as immutable, checksummed blocks in object stores.`,
		Example: `  objfs format /var/lib/objfs/vol
  objfs mount /var/lib/objfs/vol /mnt/objfs
  objfs status /var/lib/objfs/vol`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, args []string) {
			level := slog.LevelInfo
			if verbose {
				level = slog.LevelDebug
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
		},
	}
	root.PersistentFlags().BoolVarP(&verbose, "verbose", "v", false, "log debug messages")
	for _, c := range commands {
		root.AddCommand(c())
	}
	return root
}

// commands holds every subcommand; each command's file registers itself in
// an init function, so adding a command touches only its own file.
var commands []func() *cobra.Command

func register(c func() *cobra.Command) { commands = append(commands, c) }
