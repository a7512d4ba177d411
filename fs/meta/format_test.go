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
