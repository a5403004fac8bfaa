package event

// decimal views a JSON number literal as a sign, a digit string (the
// integer digits followed by the fraction digits) and the position of the
// decimal point in it (after applying the exponent).
type decimal struct {
	lit               []byte
	neg               bool
	intStart, intLen  int
	fracStart, numDig int
	point             int
}

func (n *decimal) parse(lit []byte) {
	n.lit = lit
	i := 0
	if lit[0] == '-' {
		n.neg = true
		i++
	}
	n.intStart = i
	for i < len(lit) && isDigit(lit[i]) {
		i++
	}
	n.intLen = i - n.intStart
	n.fracStart = i
	fracLen := 0
	if i < len(lit) && lit[i] == '.' {
		i++
		n.fracStart = i
		for i < len(lit) && isDigit(lit[i]) {
			i++
		}
		fracLen = i - n.fracStart
	}
	n.numDig = n.intLen + fracLen
	exp := 0
	if i < len(lit) { // 'e' or 'E'
		i++
		eneg := false
		switch lit[i] {
		case '-':
			eneg = true
			i++
		case '+':
			i++
		}
		for ; i < len(lit); i++ {
			if exp < 1<<30 { // saturate: beyond any digit count we can hold
				exp = exp*10 + int(lit[i]-'0')
			}
		}
		if eneg {
			exp = -exp
		}
	}
	n.point = n.intLen + exp
}

// digit returns digit k of the digit string, 0 outside it.
func (n *decimal) digit(k int) byte {
	switch {
	case k < 0 || k >= n.numDig:
		return 0
	case k < n.intLen:
		return n.lit[n.intStart+k] - '0'
	}
	return n.lit[n.fracStart+k-n.intLen] - '0'
}

func (n *decimal) firstNonZero() int {
	for k := 0; k < n.numDig; k++ {
		if n.digit(k) != 0 {
			return k
		}
	}
	return -1
}

func (n *decimal) anyNonZeroFrom(k int) bool {
	for k = max(k, 0); k < n.numDig; k++ {
		if n.digit(k) != 0 {
			return true
		}
	}
	return false
}
