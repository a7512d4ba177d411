//go:build !linux

package meta

const canAdvise = false

func adviseLogs(string) {}
