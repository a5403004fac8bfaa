package event

import (
	"strings"
	"testing"
	"time"
)

func mustZone(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// seedLine is the seed producer's event: Python's datetime.now().isoformat()
// writes the producer's local wall time without an offset.
const seedLine = `{"timestamp": "2026-11-29T01:00:00.123456", "service": "checkout", "level": "info", "latency_ms": 50.0, "risk_score": 0.1}`

// TestNaiveTimestampZone reads naive timestamps in EVENT_TIMEZONE (Limits.
// Location): east and west of UTC, across both daylight-saving changes of
// America/Los_Angeles; timestamps with an offset and epoch numbers are
// never affected.
func TestNaiveTimestampZone(t *testing.T) {
	tokyo, la := mustZone(t, "Asia/Tokyo"), mustZone(t, "America/Los_Angeles")
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	withTS := func(ts string) string { return strings.Replace(seedLine, `"2026-11-29T01:00:00.123456"`, ts, 1) }
	for _, tc := range []struct {
		name string
		in   string
		loc  *time.Location
		want time.Time
	}{
		{"seed line, default UTC", seedLine, nil, utc(2026, 11, 29, 1, 0, 0, 123456000)},
		{"seed line, UTC", seedLine, time.UTC, utc(2026, 11, 29, 1, 0, 0, 123456000)},
		{"seed line, Tokyo (+09:00)", seedLine, tokyo, utc(2026, 11, 28, 16, 0, 0, 123456000)},
		{"seed line, Los Angeles (PST -08:00)", seedLine, la, utc(2026, 11, 29, 9, 0, 0, 123456000)},
		{"summer, Los Angeles (PDT -07:00)", withTS(`"2026-07-01 12:00:00"`), la, utc(2026, 7, 1, 19, 0, 0, 0)},
		// 2026-03-08 02:00 PST the clocks jump to 03:00 PDT: 02:30 never
		// happens; it is read with the offset before the jump (-08:00),
		// i.e. 03:30 PDT, as Python's zoneinfo (fold=0) and PostgreSQL do.
		{"gap, Los Angeles", withTS(`"2026-03-08T02:30:00"`), la, utc(2026, 3, 8, 10, 30, 0, 0)},
		{"before the gap", withTS(`"2026-03-08T01:59:59"`), la, utc(2026, 3, 8, 9, 59, 59, 0)},
		{"after the gap", withTS(`"2026-03-08T03:00:00"`), la, utc(2026, 3, 8, 10, 0, 0, 0)},
		// 2026-11-01 02:00 PDT the clocks go back to 01:00 PST: 01:30
		// happens twice; the earlier instant (PDT) is taken, as Python's
		// zoneinfo with fold=0 (PostgreSQL would take the PST one).
		{"ambiguous, Los Angeles", withTS(`"2026-11-01T01:30:00"`), la, utc(2026, 11, 1, 8, 30, 0, 0)},
		{"after the fold", withTS(`"2026-11-01T02:00:00"`), la, utc(2026, 11, 1, 10, 0, 0, 0)},
		{"offset unaffected, Tokyo", withTS(`"2026-11-29T01:00:00.123456+00:00"`), tokyo, utc(2026, 11, 29, 1, 0, 0, 123456000)},
		{"offset unaffected, Los Angeles", withTS(`"2026-11-29T01:00:00+05:30"`), la, utc(2026, 11, 28, 19, 30, 0, 0)},
		{"Z unaffected", withTS(`"2026-11-29T01:00:00Z"`), la, utc(2026, 11, 29, 1, 0, 0, 0)},
		{"epoch unaffected", withTS(`1795914000123`), tokyo, time.UnixMilli(1795914000123).UTC()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode([]byte(tc.in), now, Limits{Location: tc.loc})
			if err != nil {
				t.Fatal(err)
			}
			if !got.Time.Equal(tc.want) || got.Time.Location() != time.UTC {
				t.Errorf("time %v, want %v", got.Time, tc.want)
			}
			checkAgainstReference(t, []byte(tc.in), now, Limits{Location: tc.loc})
		})
	}
}

// Zones for the naive-time fuzz: east and west, half-hour and 45-minute
// offsets, a 30-minute DST change (Lord Howe), a skipped day (Apia,
// 2011-12-30), and historical changes.
var fuzzZones = []string{"UTC", "Asia/Tokyo", "America/Los_Angeles", "Europe/London",
	"Australia/Lord_Howe", "Pacific/Apia", "America/St_Johns", "Asia/Kathmandu", "Europe/Moscow"}

// FuzzNaiveInstant checks naiveInstant against refNaive, which reads the
// zone's periods with time.ZoneBounds.
func FuzzNaiveInstant(f *testing.F) {
	for i, ts := range []string{"2026-03-08T02:30:00", "2026-11-01T01:30:00", "2011-12-30T12:00:00", "2026-04-05T01:45:00", "1970-01-01T00:00:00", "2040-12-31T16:30:00"} {
		w, _ := time.Parse("2006-01-02T15:04:05", ts)
		f.Add(w.Unix(), uint8(i))
	}
	locs := make([]*time.Location, len(fuzzZones))
	for i, z := range fuzzZones {
		locs[i] = mustZone(f, z)
	}
	f.Fuzz(func(t *testing.T, wall int64, zone uint8) {
		const lo, hi = -62135596800, 253402300799 // years 0001–9999
		if wall < lo || wall > hi {
			wall = lo + int64(uint64(wall)%uint64(hi-lo))
		}
		loc := locs[int(zone)%len(locs)]
		if got, want := naiveInstant(wall, loc), refNaive(wall, loc); got != want {
			t.Fatalf("wall %s in %v: got %s, reference %s", time.Unix(wall, 0).UTC().Format(time.DateTime), loc,
				time.Unix(got, 0).UTC(), time.Unix(want, 0).UTC())
		}
	})
}

// TestNaiveInstantAtEveryTransition compares naiveInstant with refNaive at
// wall times around every offset change of the fuzz zones from 1970 to
// 2040 (random wall times rarely hit one).
func TestNaiveInstantAtEveryTransition(t *testing.T) {
	n := 0
	for _, z := range fuzzZones {
		loc := mustZone(t, z)
		at := time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC).In(loc)
		stop := time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC)
		for at.Before(stop) {
			_, end := at.ZoneBounds()
			if end.IsZero() {
				break
			}
			if !end.After(at) { // a pseudo-boundary, see refNaive
				at = at.Add(time.Second)
				continue
			}
			tr := end.Unix()
			_, before := at.Zone()
			_, after := end.In(loc).Zone()
			// Wall times from an hour before the change (old offset) to an
			// hour after it (new offset), every 15 minutes.
			for wall := tr + int64(min(before, after)) - 3600; wall <= tr+int64(max(before, after))+3600; wall += 900 {
				n++
				if got, want := naiveInstant(wall, loc), refNaive(wall, loc); got != want {
					t.Fatalf("%s: wall %s: got %s, reference %s", z, time.Unix(wall, 0).UTC().Format(time.DateTime),
						time.Unix(got, 0).UTC(), time.Unix(want, 0).UTC())
				}
			}
			at = end.In(loc)
		}
	}
	// Where the zone's rule string takes over from its table (ZoneBounds
	// reports a pseudo-boundary at New Year there).
	la := mustZone(t, "America/Los_Angeles")
	for wall := time.Date(2040, 12, 31, 12, 0, 0, 0, time.UTC).Unix(); wall < time.Date(2041, 1, 1, 12, 0, 0, 0, time.UTC).Unix(); wall += 900 {
		n++
		if got, want := naiveInstant(wall, la), refNaive(wall, la); got != want || got != wall+8*3600 {
			t.Fatalf("wall %s: got %s, reference %s, want PST", time.Unix(wall, 0).UTC().Format(time.DateTime),
				time.Unix(got, 0).UTC(), time.Unix(want, 0).UTC())
		}
	}
	t.Logf("%d wall times around transitions checked", n)
}
