package event

import "time"

// Epoch-millisecond timestamps must lie in years 0000–9999 UTC, the range
// the string forms can express.
const (
	minEpochMS = -62167219200000 // 0000-01-01T00:00:00Z
	maxEpochMS = 253402300799999 // 9999-12-31T23:59:59.999Z
)

// parseTimestamp parses the string forms of the timestamp field:
//
//	YYYY-MM-DD{T|t| }hh:mm:ss[.f…][Z|z|±hh:mm]
//
// Without a zone the time is a wall-clock time in loc (nil: UTC), see
// naiveInstant. Fraction digits beyond nanoseconds are truncated. The
// result is in UTC.
func parseTimestamp(b []byte, loc *time.Location) (time.Time, bool) {
	if len(b) < len("2006-01-02T15:04:05") ||
		b[4] != '-' || b[7] != '-' || b[13] != ':' || b[16] != ':' {
		return time.Time{}, false
	}
	switch b[10] {
	case 'T', 't', ' ':
	default:
		return time.Time{}, false
	}
	year, ok1 := digits(b[0:4])
	month, ok2 := digits(b[5:7])
	day, ok3 := digits(b[8:10])
	hour, ok4 := digits(b[11:13])
	minute, ok5 := digits(b[14:16])
	sec, ok6 := digits(b[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) ||
		month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
		hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	i := len("2006-01-02T15:04:05")
	nsec := 0
	if i < len(b) && b[i] == '.' {
		i++
		start := i
		for i < len(b) && isDigit(b[i]) {
			if i-start < 9 {
				nsec = nsec*10 + int(b[i]-'0')
			}
			i++
		}
		n := i - start
		if n == 0 {
			return time.Time{}, false
		}
		for ; n < 9; n++ {
			nsec *= 10
		}
	}
	offset := 0 // seconds east of UTC
	naive := i == len(b)
	if i < len(b) {
		switch b[i] {
		case 'Z', 'z':
			i++
		case '+', '-':
			if len(b)-i != len("+07:00") || b[i+3] != ':' {
				return time.Time{}, false
			}
			oh, okh := digits(b[i+1 : i+3])
			om, okm := digits(b[i+4 : i+6])
			if !okh || !okm || oh > 23 || om > 59 {
				return time.Time{}, false
			}
			offset = oh*3600 + om*60
			if b[i] == '-' {
				offset = -offset
			}
			i += len("+07:00")
		default:
			return time.Time{}, false
		}
	}
	if i != len(b) {
		return time.Time{}, false
	}
	unix := daysFromCivil(year, month, day)*86400 + int64(hour*3600+minute*60+sec-offset)
	if naive && loc != nil && loc != time.UTC {
		unix = naiveInstant(unix, loc)
	}
	return time.Unix(unix, int64(nsec)).UTC(), true
}

// naiveInstant returns the instant (Unix seconds) at which the clocks of
// loc read the wall time wall (seconds since 1970-01-01 00:00 of that wall
// clock). At a daylight-saving change it follows Python's zoneinfo with
// fold=0, the reading of the producer that writes such timestamps: a wall
// time that occurs twice (clocks go back) is the earlier instant; one that
// never occurs (clocks go forward) is read with the offset in effect before
// the change, so 02:30 in a 02:00→03:00 gap is 03:30 new time. (time.Date
// would give 01:30 old time for the gap; PostgreSQL agrees on the gap but
// takes the later, standard-time instant for a repeated wall time.)
func naiveInstant(wall int64, loc *time.Location) int64 {
	// A day either side of wall is outside every candidate instant
	// (offsets are within ±14 h), so these are the offsets before and
	// after any change near wall; the middle one covers a zone with two
	// changes within two days.
	before := offsetAt(wall-86400, loc)
	after := offsetAt(wall+86400, loc)
	best, found := int64(0), false
	for _, off := range [3]int64{before, offsetAt(wall, loc), after} {
		t := wall - off
		if offsetAt(t, loc) == off && (!found || t < best) {
			best, found = t, true
		}
	}
	if !found { // in a gap
		return wall - before
	}
	return best
}

// offsetAt is loc's offset from UTC, in seconds, at Unix time t.
func offsetAt(t int64, loc *time.Location) int64 {
	_, off := time.Unix(t, 0).In(loc).Zone()
	return int64(off)
}

// daysFromCivil returns the number of days from 1970-01-01 to the given
// proleptic Gregorian date (H. Hinnant's days_from_civil).
func daysFromCivil(y, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := y
	if era < 0 {
		era -= 399
	}
	era /= 400
	yoe := y - era*400                     // [0, 399]
	doy := (153*((m+9)%12)+2)/5 + d - 1    // [0, 365], from March 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy // [0, 146096]
	return int64(era)*146097 + int64(doe) - 719468
}

// digits parses a run of ASCII decimal digits.
func digits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// epochMillis converts a JSON number literal (grammar already checked) of
// milliseconds since the Unix epoch to a time. The conversion is exact
// decimal arithmetic, with no float64 step: the instant is floored to the
// nanosecond ("1.0000009" is 1 ms + 0 ns, "-0.0000001" is −1 ns). It fails
// outside years 0000–9999, that is outside [minEpochMS, maxEpochMS+1).
func epochMillis(lit []byte) (time.Time, bool) {
	var n decimal
	n.parse(lit)
	first := n.firstNonZero()
	if first < 0 {
		return time.Unix(0, 0).UTC(), true // any spelling of zero
	}
	// The integer part is digits [0, point); more than 15 significant
	// integer digits is beyond year 9999 (maxEpochMS has 15).
	if n.point-first > 15 {
		return time.Time{}, false
	}
	var ms int64
	for k := max(first, 0); k < n.point; k++ {
		ms = ms*10 + int64(n.digit(k))
	}
	var frac int64 // first 6 fraction digits: nanoseconds
	for k := n.point; k < n.point+6; k++ {
		frac = frac*10 + int64(n.digit(k))
	}
	rest := n.anyNonZeroFrom(n.point + 6) // below one nanosecond
	if !n.neg {
		if ms > maxEpochMS {
			return time.Time{}, false
		}
		return time.Unix(ms/1000, ms%1000*1e6+frac).UTC(), true
	}
	if ms > -minEpochMS || ms == -minEpochMS && (frac != 0 || rest) {
		return time.Time{}, false
	}
	if rest {
		frac++ // floor: further from zero
	}
	return time.Unix(-(ms / 1000), -(ms%1000*1e6 + frac)).UTC(), true
}
