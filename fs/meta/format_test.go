package meta

import (
	"encoding/json"
	"testing"
)

// TestFormatReplicationRules checks the replica and quorum rules, including
// that a record from before replication (both zero) stays valid.
func TestFormatReplicationRules(t *testing.T) {
	tests := []struct {
		name             string
		stores           int
		replicas, quorum int
		ok               bool
	}{
		{"old record, one store", 1, 0, 0, true},
		{"old record, quorum only", 1, 0, 1, true},
		{"single", 1, 1, 1, true},
		{"three of three, majority", 3, 3, 2, true},
		{"two of three", 3, 2, 1, true},
		{"all must write", 3, 3, 3, true},
		{"more replicas than stores", 2, 3, 2, false},
		{"quorum above replicas", 3, 2, 3, false},
		{"quorum above implied single replica", 3, 0, 2, false},
		{"negative replicas", 3, -1, 1, false},
		{"negative quorum", 3, 3, -1, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stores := make([]string, tc.stores)
			for i := range stores {
				stores[i] = "local"
			}
			f := NewFormat(stores, 64<<10)
			f.Replicas, f.WriteQuorum = tc.replicas, tc.quorum
			if err := f.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestFormatOldRecordDecodes checks that a JSON record without the
// replication fields decodes to zeros, which Validate accepts.
func TestFormatOldRecordDecodes(t *testing.T) {
	old := `{"version":1,"uuid":"x","block_size":65536,"chunk_size":67108864,"inline_max":16384,"stores":["local"]}`
	var f Format
	if err := json.Unmarshal([]byte(old), &f); err != nil {
		t.Fatal(err)
	}
	if f.Replicas != 0 || f.WriteQuorum != 0 {
		t.Errorf("decoded replicas %d, quorum %d; want 0, 0", f.Replicas, f.WriteQuorum)
	}
	if err := f.Validate(); err != nil {
		t.Errorf("old record rejected: %v", err)
	}
}

// TestFormatBlockHash checks which version and hash combinations a record
// may carry: version 1 records name blocks by SHA-256 only, later ones say
// which hash, and neither an unknown hash nor an unknown version passes.
func TestFormatBlockHash(t *testing.T) {
	tests := []struct {
		name      string
		version   int
		hash      string
		ok        bool
		effective string // BlockHashName when ok
	}{
		{"version 1 record without a hash", 1, "", true, HashSHA256},
		{"version 1 record naming sha256", 1, HashSHA256, true, HashSHA256},
		{"version 1 cannot use blake3", 1, HashBLAKE3, false, ""},
		{"version 2 blake3", 2, HashBLAKE3, true, HashBLAKE3},
		{"version 2 sha256", 2, HashSHA256, true, HashSHA256},
		{"version 2 must name its hash", 2, "", false, ""},
		{"version 3 blake3", 3, HashBLAKE3, true, HashBLAKE3},
		{"version 3 must name its hash", 3, "", false, ""},
		{"unknown hash", 2, "md5", false, ""},
		{"hash names are exact", 2, "BLAKE3", false, ""},
		{"version 0", 0, HashBLAKE3, false, ""},
		{"future version", FormatVersion + 1, HashBLAKE3, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFormat([]string{"local"}, 64<<10)
			f.Version, f.BlockHash = tc.version, tc.hash
			err := f.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && f.BlockHashName() != tc.effective {
				t.Errorf("BlockHashName() = %q, want %q", f.BlockHashName(), tc.effective)
			}
		})
	}
}

// TestHashBlockVectors pins each hash to published test vectors, so a
// block ID never silently changes meaning.
func TestHashBlockVectors(t *testing.T) {
	tests := []struct {
		version int
		hash    string
		data    string
		want    string
	}{
		{1, "", "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{1, "", "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{2, HashSHA256, "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{2, HashBLAKE3, "", "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"},
		{2, HashBLAKE3, "abc", "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"},
	}
	for _, tc := range tests {
		f := NewFormat([]string{"local"}, 64<<10)
		f.Version, f.BlockHash = tc.version, tc.hash
		if got := f.HashBlock([]byte(tc.data)).String(); got != tc.want {
			t.Errorf("version %d %q: HashBlock(%q) = %s, want %s", tc.version, tc.hash, tc.data, got, tc.want)
		}
	}
}

// TestNewFormatUsesBLAKE3 checks what a freshly formatted volume uses.
func TestNewFormatUsesBLAKE3(t *testing.T) {
	f := NewFormat([]string{"local"}, 64<<10)
	if f.Version != FormatVersion || f.BlockHash != HashBLAKE3 {
		t.Errorf("new format: version %d hash %q; want %d %q", f.Version, f.BlockHash, FormatVersion, HashBLAKE3)
	}
	if err := f.Validate(); err != nil {
		t.Error(err)
	}
}
