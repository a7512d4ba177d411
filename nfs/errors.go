package nfs

import (
	"context"
	"errors"
	"log/slog"
	"syscall"
)

// nfsstat3 values (RFC 1813, section 2.6).
const (
	nfsOK          uint32 = 0
	errPerm        uint32 = 1
	errNoEnt       uint32 = 2
	errIO          uint32 = 5
	errNXIO        uint32 = 6
	errAcces       uint32 = 13
	errExist       uint32 = 17
	errXDev        uint32 = 18
	errNoDev       uint32 = 19
	errNotDir      uint32 = 20
	errIsDir       uint32 = 21
	errInval       uint32 = 22
	errFBig        uint32 = 27
	errNoSpc       uint32 = 28
	errROFS        uint32 = 30
	errMLink       uint32 = 31
	errNameTooLong uint32 = 63
	errNotEmpty    uint32 = 66
	errDQuot       uint32 = 69
	errStale       uint32 = 70
	errBadHandleSt uint32 = 10001
	errNotSync     uint32 = 10002
	errBadCookie   uint32 = 10003
	errNotSupp     uint32 = 10004
	errTooSmall    uint32 = 10005
	errServerFault uint32 = 10006
	errBadType     uint32 = 10007
	errJukebox     uint32 = 10008
)

// errnoStatus is the NFS status for each errno the POSIX layer returns.
var errnoStatus = map[syscall.Errno]uint32{
	syscall.EPERM:        errPerm,
	syscall.ENOENT:       errNoEnt,
	syscall.EIO:          errIO,
	syscall.ENXIO:        errNXIO,
	syscall.EACCES:       errAcces,
	syscall.EEXIST:       errExist,
	syscall.EXDEV:        errXDev,
	syscall.ENODEV:       errNoDev,
	syscall.ENOTDIR:      errNotDir,
	syscall.EISDIR:       errIsDir,
	syscall.EINVAL:       errInval,
	syscall.EFBIG:        errFBig,
	syscall.ENOSPC:       errNoSpc,
	syscall.EROFS:        errROFS,
	syscall.EMLINK:       errMLink,
	syscall.ENAMETOOLONG: errNameTooLong,
	syscall.ENOTEMPTY:    errNotEmpty,
	syscall.EDQUOT:       errDQuot,
	syscall.ESTALE:       errStale,
	syscall.ENOTSUP:      errNotSupp,
	syscall.ELOOP:        errInval, // NFSv3 has no ELOOP; the client resolves symlinks itself
	syscall.ERANGE:       errInval,
	syscall.EBADF:        errStale,
	syscall.EAGAIN:       errJukebox,
}

// statusOf maps an error from the POSIX layer to an NFS status. An error
// that is not an errno is unexpected (I/O failure, corruption): it becomes
// NFS3ERR_IO and is logged, since the client learns nothing more.
func statusOf(ctx context.Context, log *slog.Logger, op string, err error) uint32 {
	if err == nil {
		return nfsOK
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if st, ok := errnoStatus[errno]; ok {
			return st
		}
	}
	log.LogAttrs(ctx, slog.LevelError, "nfs request failed", slog.String("op", op), slog.Any("err", err))
	return errIO
}
