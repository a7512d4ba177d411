package nfs

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	gonfs "github.com/willscott/go-nfs"
)

// go-nfs logs through one process-wide logger. gonfsLog sends its messages
// to the slog logger of the server started last (there is normally one).
type gonfsLog struct {
	level gonfs.LogLevel
}

var gonfsLogger atomic.Pointer[slog.Logger]

func init() {
	gonfsLogger.Store(slog.Default())
	gonfs.SetLogger(&gonfsLog{level: gonfs.DebugLevel})
}

func (l *gonfsLog) log(level slog.Level, msg string) {
	gonfsLogger.Load().Log(context.Background(), level, "go-nfs: "+strings.TrimSpace(msg))
}

func (l *gonfsLog) SetLevel(level gonfs.LogLevel) { l.level = level }
func (l *gonfsLog) GetLevel() gonfs.LogLevel      { return l.level }

func (l *gonfsLog) ParseLevel(s string) (gonfs.LogLevel, error) {
	return (&gonfs.DefaultLogger{}).ParseLevel(s)
}

// Even go-nfs's Panic and Fatal only log: nothing it reports may stop the server.
func (l *gonfsLog) Panic(a ...any)            { l.log(slog.LevelError, fmt.Sprint(a...)) }
func (l *gonfsLog) Fatal(a ...any)            { l.log(slog.LevelError, fmt.Sprint(a...)) }
func (l *gonfsLog) Error(a ...any)            { l.log(slog.LevelError, fmt.Sprint(a...)) }
func (l *gonfsLog) Warn(a ...any)             { l.log(slog.LevelWarn, fmt.Sprint(a...)) }
func (l *gonfsLog) Info(a ...any)             { l.log(slog.LevelInfo, fmt.Sprint(a...)) }
func (l *gonfsLog) Debug(a ...any)            { l.log(slog.LevelDebug, fmt.Sprint(a...)) }
func (l *gonfsLog) Trace(a ...any)            {}
func (l *gonfsLog) Print(a ...any)            { l.log(slog.LevelInfo, fmt.Sprint(a...)) }
func (l *gonfsLog) Panicf(f string, a ...any) { l.log(slog.LevelError, fmt.Sprintf(f, a...)) }
func (l *gonfsLog) Fatalf(f string, a ...any) { l.log(slog.LevelError, fmt.Sprintf(f, a...)) }
func (l *gonfsLog) Errorf(f string, a ...any) { l.log(slog.LevelError, fmt.Sprintf(f, a...)) }
func (l *gonfsLog) Warnf(f string, a ...any)  { l.log(slog.LevelWarn, fmt.Sprintf(f, a...)) }
func (l *gonfsLog) Infof(f string, a ...any)  { l.log(slog.LevelInfo, fmt.Sprintf(f, a...)) }
func (l *gonfsLog) Debugf(f string, a ...any) { l.log(slog.LevelDebug, fmt.Sprintf(f, a...)) }
func (l *gonfsLog) Tracef(string, ...any)     {}
func (l *gonfsLog) Printf(f string, a ...any) { l.log(slog.LevelInfo, fmt.Sprintf(f, a...)) }
