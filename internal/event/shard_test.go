package event

import (
	"fmt"
	"hash/fnv"
	"testing"
)

func TestShardVectors(t *testing.T) {
	// Computed independently (FNV-1a 32 reference implementation in Python).
	for _, tc := range []struct {
		service string
		hash    uint32
		mod16   int
		mod12   int
	}{
		{"", 0x811c9dc5, 5, 1},
		{"a", 0xe40c292c, 12, 4},
		{"checkout", 0x4db95739, 9, 1},
		{"payments", 0xca39f626, 6, 6},
		{"auth", 0x953fa84f, 15, 3},
		{"_overflow", 0xfa58a8ec, 12, 4},
		{"a.b", 0x108bf50c, 12, 4},
		{"a_b", 0x1ba46871, 1, 9},
		{"café", 0xa82b5049, 9, 1},
	} {
		h := fnv.New32a()
		h.Write([]byte(tc.service))
		if h.Sum32() != tc.hash {
			t.Fatalf("vector for %q is wrong: hash/fnv gives %#x", tc.service, h.Sum32())
		}
		if got := Shard(tc.service, 16); got != tc.mod16 {
			t.Errorf("Shard(%q, 16) = %d, want %d", tc.service, got, tc.mod16)
		}
		if got := Shard(tc.service, 12); got != tc.mod12 {
			t.Errorf("Shard(%q, 12) = %d, want %d", tc.service, got, tc.mod12)
		}
		if got := Shard(tc.service, 1<<32); got != int(tc.hash) {
			t.Errorf("Shard(%q, 1<<32) = %d, want the hash %d", tc.service, got, tc.hash)
		}
	}
}

func TestShardMatchesHashFNV(t *testing.T) {
	for i := 0; i < 2000; i++ {
		s := fmt.Sprintf("svc-%d-%x", i, i*7919)
		h := fnv.New32a()
		h.Write([]byte(s))
		for _, n := range []int{1, 2, 3, 16, 17, 64, 1000} {
			got := Shard(s, n)
			if want := int(h.Sum32() % uint32(n)); got != want {
				t.Fatalf("Shard(%q, %d) = %d, want %d", s, n, got, want)
			}
			if got < 0 || got >= n {
				t.Fatalf("Shard(%q, %d) = %d out of range", s, n, got)
			}
		}
	}
}

func TestShardSpread(t *testing.T) {
	var counts [16]int
	for i := 0; i < 16000; i++ {
		counts[Shard(fmt.Sprintf("service-%d", i), 16)]++
	}
	for s, c := range counts {
		if c < 800 || c > 1200 {
			t.Errorf("shard %d got %d of 16000 services", s, c)
		}
	}
}

func TestShardPanics(t *testing.T) {
	for _, n := range []int{0, -1} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Shard(_, %d) did not panic", n)
				}
			}()
			Shard("checkout", n)
		}()
	}
}

func TestShardAllocs(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = Shard("checkout", 16) }); n != 0 {
		t.Errorf("Shard: %.0f allocs, want 0", n)
	}
}
