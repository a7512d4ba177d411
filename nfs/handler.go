package nfs

import (
	"context"
	"net"
	"strings"

	billy "github.com/go-git/go-billy/v5"
	gonfs "github.com/willscott/go-nfs"

	"github.com/objfs/objfs/fs/meta"
)

// handler is the go-nfs Handler: it mounts the volume root for MOUNT MNT
// and converts between go-nfs's paths and our inode handles. Handles are
// never kept in a table: a handle is decoded, checked against the inode's
// generation and turned into a path on every use.
type handler struct {
	s *server
}

var _ gonfs.Handler = (*handler)(nil)

// Mount accepts the only export, "/".
func (h *handler) Mount(ctx context.Context, _ net.Conn, req gonfs.MountRequest) (gonfs.MountStatus, billy.Filesystem, []gonfs.AuthFlavor) {
	if p := strings.TrimRight(string(req.Dirpath), "/"); p != "" {
		return gonfs.MountStatusErrNoEnt, nil, nil
	}
	return gonfs.MountStatusOk, h.fs(ctx), []gonfs.AuthFlavor{gonfs.AuthFlavorUnix, gonfs.AuthFlavorNull}
}

// fs is the billy view go-nfs works through, with root's identity: the
// procedures go-nfs serves for us (MOUNT) check nothing per user.
func (h *handler) fs(ctx context.Context) *billyFS {
	return &billyFS{ctx: ctx, f: h.s.f, c: &meta.Root, ro: h.s.opts.ReadOnly}
}

// Change returns nil for a read-only export, as go-nfs expects.
func (h *handler) Change(fsys billy.Filesystem) billy.Change {
	b, ok := fsys.(*billyFS)
	if !ok || b.ro {
		return nil
	}
	return b
}

// FSStat reports the volume's real space and file counts.
func (h *handler) FSStat(ctx context.Context, _ billy.Filesystem, st *gonfs.FSStat) error {
	sf, err := h.s.f.StatFs(ctx)
	if err != nil {
		return err
	}
	bs := uint64(sf.BlockSize)
	st.TotalSize, st.FreeSize, st.AvailableSize = sf.Blocks*bs, sf.BlocksFree*bs, sf.BlocksFree*bs
	st.TotalFiles, st.FreeFiles, st.AvailableFiles = sf.Files, sf.FilesFree, sf.FilesFree
	return nil
}

// ToHandle returns the handle of the file at path, or a handle that
// decodes as malformed if there is none.
func (h *handler) ToHandle(fsys billy.Filesystem, path []string) []byte {
	b, ok := fsys.(*billyFS)
	if !ok {
		b = h.fs(context.Background())
	}
	a, err := b.walk(path)
	if err != nil {
		return []byte{0}
	}
	return encodeHandle(a.Ino, a.Gen)
}

// FromHandle checks the handle's generation and returns the inode's
// current path: a missing inode or another generation is NFS3ERR_STALE.
func (h *handler) FromHandle(fh []byte) (billy.Filesystem, []string, error) {
	ctx := context.Background()
	ino, gen, err := decodeHandle(fh)
	if err != nil {
		return nil, nil, &gonfs.NFSStatusError{NFSStatus: gonfs.NFSStatusBadHandle, WrappedErr: err}
	}
	a, err := h.s.f.GetAttr(ctx, ino)
	if err != nil || a.Gen != gen || a.Nlink == 0 {
		return nil, nil, &gonfs.NFSStatusError{NFSStatus: gonfs.NFSStatusStale, WrappedErr: err}
	}
	p, err := h.s.f.Meta().Path(ctx, ino)
	if err != nil {
		return nil, nil, &gonfs.NFSStatusError{NFSStatus: gonfs.NFSStatusStale, WrappedErr: err}
	}
	return h.fs(ctx), splitPath(p), nil
}

// InvalidateHandle has nothing to do: there is no handle table.
func (h *handler) InvalidateHandle(billy.Filesystem, []byte) error { return nil }

// HandleLimit is unbounded in practice: handles need no server memory.
func (h *handler) HandleLimit() int { return 1 << 30 }

func splitPath(p string) []string {
	var parts []string
	for _, s := range strings.Split(p, "/") {
		if s != "" {
			parts = append(parts, s)
		}
	}
	return parts
}
