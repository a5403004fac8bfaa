// Package compose holds the Docker Compose deployment of StackLens
// (docker-compose.yml, docker-compose.cluster.yml, the Dockerfile and the
// Prometheus, Grafana, NATS and nginx configuration). It has no Go code: its
// tests check, without a Docker engine, that those files only name what the
// binary, the schema and the code really have — commands, configuration
// variables, ports, metric names and SQL objects — so a rename anywhere
// breaks the build instead of a deployment. The Prometheus and Grafana
// files are also checked by the real tools: promtool (configuration, rules
// and their unit tests in prometheus/alerts_test.yml) and a Prometheus
// server scraping a running stack (live_test.go).
package compose
