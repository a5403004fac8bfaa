package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// eachSample calls fn for every sample of a Prometheus text exposition:
// its metric name, its series (the name with its labels, as written) and
// its value.
func eachSample(r io.Reader, fn func(name, series string, v float64)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		series := line[:sp]
		name, _, _ := strings.Cut(series, "{")
		fn(name, series, v)
	}
	return sc.Err()
}

// parseProm sums, per metric name, the values of all series of the wanted
// names in a Prometheus text exposition (labels are summed over). A wanted
// name with labels (`name{label="v"}`) matches that one series exactly; a
// series counts for its name and, when wanted too, for itself.
func parseProm(r io.Reader, names ...string) (map[string]float64, error) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	err := eachSample(r, func(name, series string, v float64) {
		if want[name] {
			out[name] += v
		}
		if series != name && want[series] {
			out[series] += v
		}
	})
	return out, err
}

// scrape reads the wanted series of a role's /metrics (see parseProm).
func scrape(ctx context.Context, c *http.Client, url string, names ...string) (map[string]float64, error) {
	text, err := scrapeText(ctx, c, url)
	if err != nil {
		return nil, err
	}
	return parseProm(strings.NewReader(text), names...)
}

// scrapeText reads a role's /metrics.
func scrapeText(ctx context.Context, c *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
