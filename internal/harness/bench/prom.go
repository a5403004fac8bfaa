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

// parseProm sums, per metric name, the values of all series of the wanted
// names in a Prometheus text exposition (labels are summed over). A wanted
// name with labels (`name{label="v"}`) matches that one series exactly.
func parseProm(r io.Reader, names ...string) (map[string]float64, error) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
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
		name, series := line[:sp], line[:sp]
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		// A series counts for its name and, when wanted too, for itself.
		if !want[name] && !want[series] {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		if want[name] {
			out[name] += v
		}
		if series != name && want[series] {
			out[series] += v
		}
	}
	return out, sc.Err()
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
