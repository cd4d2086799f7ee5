// Package deploy holds Portcullis's deployment files and their offline
// validation; it has no code of its own for the product to import.
//
// Beside this file: Dockerfile (with Dockerfile.dockerignore), compose.yaml
// with its Caddyfile and portcullis.env.example, the Kubernetes manifests in
// k8s/ (applied with kustomize), and the systemd unit in systemd/. README.md
// says how to use each.
//
// The tests in this package check those files without a cluster, a Docker
// engine or a network: every Kubernetes object is decoded strictly into the
// k8s.io/api types (unknown or misspelt fields refused), the compose file is
// decoded with known fields only, and every environment variable any of them
// sets must be a real Portcullis setting whose value the server's own
// configuration parser accepts.
//
// This package must never be imported by the server or the command line, and
// its files must never hold a real secret: secrets appear only as CHANGE_ME
// placeholders in the *.example files.
package deploy
